"""Ground-floor pieces of the typed models (stage params, the training config): shared checks
that pydantic's lax mode does not make.

:class:`StrictNumbers` — YAML's ``true`` / ``false`` are Python bools, and bool is a subclass of
int, so pydantic accepts ``iterations: true`` as 1 and ``lr: true`` as 1.0. Mixed into a model, it
refuses a bool for any field whose type does not itself admit a bool.
"""
from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationInfo, field_validator

#: the largest seed any field takes: numpy's legacy seeding and most tools take 32 bits
MAX_SEED = 2**32 - 1


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


def _expected(annotation: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string"}
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return " or ".join(names.get(a, getattr(a, "__name__", str(a))) for a in args)
