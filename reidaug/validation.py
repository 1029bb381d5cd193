"""Ground-floor pieces of the typed models (stage params, the training config): shared checks
that pydantic's lax mode does not make.

:class:`StrictNumbers` — YAML's ``true`` / ``false`` are Python bools, and bool is a subclass of
int, so pydantic accepts ``iterations: true`` as 1 and ``lr: true`` as 1.0. Mixed into a model, it
refuses a bool for any field whose type does not itself admit a bool. It also bounds every number
(in lists and dict values too): never NaN or infinite, and at most :data:`MAX_NUMBER` in size
where a field does not declare both bounds of its own (a cadence of 10^26 steps, ``lr: .nan`` or
``seed: -1e30`` is a typo, never a setting).
"""
from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationInfo, field_validator

#: the largest seed any field takes: numpy's legacy seeding and most tools take 32 bits
MAX_SEED = 2**32 - 1
#: the size bound of a number that its field does not bound itself (2^32: any 32-bit seed still fits)
MAX_NUMBER = 2**32


def admits_bool(annotation: Any) -> bool:
    """True when ``annotation`` accepts a bool as itself (``bool``, ``Any``, a union or
    ``Literal`` holding one), False for numbers, strings, containers."""
    if annotation is bool or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return any(isinstance(a, bool) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        return any(admits_bool(a) for a in typing.get_args(annotation))
    return False


class StrictNumbers(BaseModel):
    """Mixin: a boolean where a number (or anything but a bool) is expected is an error."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None:
            field = cls.model_fields.get(info.field_name)
            if field is not None and not admits_bool(field.annotation):
                raise ValueError(f"expected {_expected(field.annotation)}, not a boolean (YAML reads "
                                 "true / false as booleans).")
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _bounded_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name) if info.field_name is not None else None
        if field is None:
            return value
        bounded = _declares_bounds(field)
        for x in _numbers_in(value):
            if x != x or x in (float("inf"), float("-inf")):
                raise ValueError(f"expected a finite number; found {x}")
            if not bounded and abs(x) > MAX_NUMBER:
                raise ValueError(f"expected a number of at most 2^32 in size; found {x:.3g}. "
                                 "Fix: a typo? Use a realistic value.")
        return value


def _declares_bounds(field: Any) -> bool:
    """Both an upper and a lower bound declared: then pydantic has checked the size already."""
    names = {type(m).__name__ for m in field.metadata}
    return bool(names & {"Le", "Lt"}) and bool(names & {"Ge", "Gt"})


def _numbers_in(value: Any, depth: int = 0) -> list[float]:
    """The numbers in a value, looking into lists, tuples and dict values (not bools, not strings)."""
    if isinstance(value, bool) or depth > 8:
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers_in(v, depth + 1)]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _numbers_in(v, depth + 1)]
    return []


def _expected(annotation: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string"}
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return " or ".join(names.get(a, getattr(a, "__name__", str(a))) for a in args)
