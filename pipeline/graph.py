"""Build and check the stage graph before anything runs (the kedro rule), then key it.

Checks, all before the first chunk: every stage kind exists, every parameter validates, every
input resolves to a declared output of a stage in the pipeline, no cycles, no path claimed by
two stages. Then each stage's cache key is computed in topological order::

    key = sha256(canonical_json({stage, version, params (semantic only),
                                 inputs: {slot: "<upstream key>:<output>"}, fingerprint}))
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Mapping

from pydantic import ValidationError

from reidaug.errors import ConfigError, GraphError, did_you_mean
from reidaug.pipeline.config import LoadedConfig, format_validation_error
from reidaug.pipeline.hashing import Digest, canonicalize, stable_hash
from reidaug.pipeline.stage import Params, StageSpec, parse_ref

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Node:
    name: str  # instance name
    spec: StageSpec
    params: Params
    inputs: dict[str, tuple[str, str] | None]  # slot -> (upstream instance, output)


@dataclasses.dataclass
class Graph:
    loaded: LoadedConfig
    nodes: dict[str, Node]  # in topological order
    keys: dict[str, str]
    material: dict[str, dict[str, Any]]  # what each key was computed from

    @property
    def base_dir(self) -> Path:
        return self.loaded.base_dir

    def upstream(self, name: str) -> list[str]:
        return [ref[0] for ref in self.nodes[name].inputs.values() if ref is not None]

    def closure(self, targets: list[str]) -> list[str]:
        """``targets`` and everything they need, in topological order."""
        need: set[str] = set()
        stack = list(targets)
        while stack:
            n = stack.pop()
            if n not in need:
                need.add(n)
                stack.extend(self.upstream(n))
        return [n for n in self.nodes if n in need]


def _resolve_spec(loaded: LoadedConfig, name: str, registry: Mapping[str, StageSpec]) -> StageSpec:
    cfg = loaded.config.stages[name]
    kind = cfg.uses or name
    if kind not in registry:
        loc = ("stages", name, "uses") if cfg.uses else ("stages", name)
        raise loaded.error(
            loc,
            f'unknown stage "{kind}".{did_you_mean(kind, registry)} Known stages: {", ".join(sorted(registry))}. '
            "Name the stage after a known one, or add `uses: <known stage>`",
        )
    return registry[kind]


def _validate_params(loaded: LoadedConfig, name: str, spec: StageSpec) -> Params:
    raw = loaded.config.stages[name].params
    prefix = ("stages", name, "params")
    try:
        return spec.params.model_validate(raw, context={"base_dir": loaded.base_dir})
    except ValidationError as e:
        raise ConfigError(
            format_validation_error(
                e, prefix, raw, loaded.where, loaded.snippet, lambda sub: list(spec.params.model_fields)
            )
        ) from None


def build_graph(loaded: LoadedConfig, registry: Mapping[str, StageSpec]) -> Graph:
    stages = loaded.config.stages
    nodes: dict[str, Node] = {}
    for name in stages:
        spec = _resolve_spec(loaded, name, registry)
        params = _validate_params(loaded, name, spec)
        bound = stages[name].inputs
        for slot in bound:
            if slot not in spec.inputs:
                raise loaded.error(
                    ("stages", name, "inputs", slot),
                    f"stage {spec.name} has no input {slot!r}.{did_you_mean(slot, spec.inputs)} "
                    f"Its inputs: {', '.join(spec.inputs) or '(none)'}",
                )
        inputs: dict[str, tuple[str, str] | None] = {}
        for slot, default in spec.inputs.items():
            explicit = slot in bound
            ref = bound[slot] if explicit else default
            loc = ("stages", name, "inputs", slot) if explicit else ("stages", name)
            if not ref:
                if slot in spec.optional_inputs:
                    inputs[slot] = None
                    continue
                raise loaded.error(loc, f"input {slot!r} must be bound, e.g. `inputs: {{{slot}: <stage>.<output>}}`")
            try:
                up, out = parse_ref(ref)
            except ValueError as e:
                raise loaded.error(loc, str(e)) from None
            if up not in stages:
                if not explicit and slot in spec.optional_inputs:
                    inputs[slot] = None
                    continue
                raise GraphError(
                    f"{loaded.where(loc)}: stage {name!r} input {slot!r} needs {ref!r}, but the pipeline "
                    f"has no stage {up!r}.{did_you_mean(up, [s for s in stages if s != name])} "
                    f"Stages: {', '.join(stages)}. "
                    f"Add stage {up!r} or bind stages.{name}.inputs.{slot} to another output."
                    f"{loaded.snippet(loc)}"
                )
            if up == name:
                raise GraphError(f"{loaded.where(loc)}: stage {name!r} reads its own output {ref!r}")
            inputs[slot] = (up, out)
        if spec.check_bindings is not None:
            problem = spec.check_bindings(params, frozenset(s for s, ref in inputs.items() if ref))
            if problem:
                raise loaded.error(("stages", name), problem)
        nodes[name] = Node(name, spec, params, inputs)

    # outputs exist upstream
    for node in nodes.values():
        for slot, ref in node.inputs.items():
            if ref is None:
                continue
            up, out = ref
            outputs = nodes[up].spec.outputs
            if out not in outputs:
                raise GraphError(
                    f"{loaded.where(('stages', node.name, 'inputs', slot))}: stage {node.name!r} input {slot!r} "
                    f"reads {up}.{out}, but stage {up!r} ({nodes[up].spec.name}) has no output {out!r}."
                    f"{did_you_mean(out, outputs)} Its outputs: {', '.join(outputs)}"
                )

    order = _toposort(nodes, loaded)
    nodes = {n: nodes[n] for n in order}
    _check_claims(nodes, loaded)
    keys, material = compute_keys(nodes, loaded.base_dir)
    return Graph(loaded, nodes, keys, material)


def _toposort(nodes: Mapping[str, Node], loaded: LoadedConfig) -> list[str]:
    """Depth-first order that keeps the YAML order where it can; a cycle is reported whole."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for start in nodes:
        if state.get(start) == 2:
            continue
        stack: list[tuple[str, list[str]]] = [(start, [r[0] for r in nodes[start].inputs.values() if r])]
        path = [start]
        state[start] = 1
        while stack:
            name, todo = stack[-1]
            if todo:
                up = todo.pop(0)
                if state.get(up) == 1:
                    cycle = path[path.index(up):] + [up]
                    slot = next(s for s, r in nodes[name].inputs.items() if r and r[0] == up)
                    loc = ("stages", name, "inputs", slot)  # the binding that closes the cycle
                    raise GraphError(
                        f"{loaded.where(loc)}: the stages form a cycle: {' -> '.join(reversed(cycle))} "
                        f"(this line binds {name}.inputs.{slot} to {up}). A stage cannot depend on its own "
                        f"output; rebind one of these inputs.{loaded.snippet(loc)}"
                    )
                if state.get(up) != 2:
                    state[up] = 1
                    path.append(up)
                    stack.append((up, [r[0] for r in nodes[up].inputs.values() if r]))
            else:
                stack.pop()
                path.pop()
                state[name] = 2
                order.append(name)
    return order


def _check_claims(nodes: Mapping[str, Node], loaded: LoadedConfig) -> None:
    """No two stages may write the same path outside the cache (e.g. two exports to one file)."""
    owner: dict[Path, str] = {}
    for node in nodes.values():
        claims = getattr(node.params, "claimed_paths", None)
        for p in (claims(loaded.base_dir) if claims else []):
            p = Path(p).resolve()
            if p in owner:
                raise GraphError(
                    f"{loaded.path}: stages {owner[p]!r} and {node.name!r} both write {p}; "
                    "give each its own output path"
                )
            owner[p] = node.name


def key_material(node: Node, upstream_keys: Mapping[str, str], base_dir: Path) -> dict[str, Any]:
    spec = node.spec
    where = f"stage {node.name!r} params"
    material: dict[str, Any] = {
        "stage": spec.name,
        "version": spec.version,
        "params": canonicalize(spec.semantic_params(node.params), where),
        "inputs": {
            slot: (f"{upstream_keys[ref[0]]}:{ref[1]}" if ref else None) for slot, ref in sorted(node.inputs.items())
            if ref is not None or slot not in spec.unkeyed_if_unbound
        },
    }
    numerics = node.params.numerics() if hasattr(node.params, "numerics") else None
    if numerics is not None:  # computed on CUDA (bf16 or fp32): other bytes than the CPU reference
        material["numerics"] = numerics
    if spec.fingerprint is not None:
        fp = spec.fingerprint(node.params, base_dir)
        material["fingerprint"] = (str(fp) if isinstance(fp, Digest)  # hashed while it was made
                                   else stable_hash(fp, f"stage {node.name!r} input files"))
    return material


def compute_keys(nodes: Mapping[str, Node], base_dir: Path) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    keys: dict[str, str] = {}
    material: dict[str, dict[str, Any]] = {}
    for name, node in nodes.items():  # topological order
        material[name] = key_material(node, keys, base_dir)
        keys[name] = stable_hash(material[name])
    return keys, material


def explain_change(old: Mapping[str, Any] | None, new: Mapping[str, Any], names: Mapping[str, str]) -> str:
    """Why a stage's key differs from the one it had last time (DVC logs this)."""
    if not old:
        return "never ran"
    reasons = []
    if old.get("version") != new.get("version"):
        reasons.append(f"stage version {old.get('version')} -> {new.get('version')}")
    op, np_ = old.get("params", {}), new.get("params", {})
    for k in sorted(set(op) | set(np_)):
        if op.get(k) != np_.get(k):
            reasons.append(f"param {k}: {_short(op.get(k))} -> {_short(np_.get(k))}")
    oi, ni = old.get("inputs", {}), new.get("inputs", {})
    for slot in sorted(set(oi) | set(ni)):
        if oi.get(slot) != ni.get(slot):
            reasons.append(f"upstream {names.get(slot, slot)} changed")
    if old.get("numerics") != new.get("numerics"):
        reasons.append(f"numerics {old.get('numerics') or 'cpu-fp32'} -> {new.get('numerics') or 'cpu-fp32'}")
    if old.get("fingerprint") != new.get("fingerprint"):
        reasons.append("input files changed")
    return "; ".join(reasons) or "same inputs (the entry was removed or never finished)"


def _short(value: Any) -> str:
    if isinstance(value, dict) and set(value) == {"__float__"}:
        return value["__float__"]
    text = "(unset)" if value is None else str(value)
    return text if len(text) <= 40 else text[:37] + "..."
