"""Imports go one way: ground floor -> pipeline core / library -> models -> gen -> stages -> CLI.

A module may import (at the top or inside a function: lazy imports count too) only from its
own layer or the layers below it. A new import that goes up is a design change: move the code
down instead, or change ALLOWED here and say why in docs/overview.md.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import reidaug

# layer -> the reidaug subpackages it may import (besides its own)
GROUND = {"reidaug.errors", "reidaug.io", "reidaug.validation"}
ALLOWED: dict[str, set[str]] = {
    "reidaug.errors": set(),
    "reidaug.io": {"reidaug.errors"},
    "reidaug.validation": {"reidaug.errors"},
    "reidaug.pipeline": GROUND,
    "reidaug.pose": GROUND,
    "reidaug.data": GROUND | {"reidaug.pose"},
    "reidaug.eval": GROUND | {"reidaug.pose", "reidaug.data", "reidaug.train"},
    "reidaug.train": GROUND | {"reidaug.pose", "reidaug.data"},
    "reidaug.models": GROUND | {"reidaug.pose", "reidaug.data", "reidaug.train"},
    "reidaug.gen": GROUND | {"reidaug.pose", "reidaug.data", "reidaug.train", "reidaug.eval", "reidaug.models"},
    "reidaug.report": GROUND | {"reidaug.pipeline", "reidaug.pose", "reidaug.data", "reidaug.train", "reidaug.eval"},
    "reidaug.stages": GROUND | {"reidaug.pipeline", "reidaug.pose", "reidaug.data", "reidaug.train",
                                "reidaug.eval", "reidaug.models", "reidaug.gen"},
}
TOP = {"reidaug", "reidaug.cli", "reidaug.cli_train", "reidaug.configs"}  # may import anything


def _modules() -> list[tuple[str, Path]]:
    """(dotted name, file) of every module of the installed package (editable: the source tree)."""
    out = []
    for name, path in _package_dirs().items():
        for f in sorted(path.rglob("*.py")):
            rel = f.relative_to(path).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out.append((".".join([name, *parts]), f))
    return out


def _package_dirs() -> dict[str, Path]:
    import importlib

    dirs = {}
    for name in ALLOWED:
        mod = importlib.import_module(name)
        dirs[name] = Path(mod.__file__).parent if mod.__file__.endswith("__init__.py") else Path(mod.__file__)
    return dirs


def _layer(module: str) -> str | None:
    for name in sorted(ALLOWED, key=len, reverse=True):
        if module == name or module.startswith(name + "."):
            return name
    return None


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: -node.level] if path.name != "__init__.py" else \
                    module.split(".")[: len(module.split(".")) - node.level + 1]
                found.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.add(node.module)
    return {m for m in found if m == "reidaug" or m.startswith("reidaug.")}


def test_every_package_has_a_layer():
    assert _package_dirs(), "no packages found"
    assert reidaug.__file__


@pytest.mark.parametrize("module,path", _modules(), ids=lambda v: v if isinstance(v, str) else "")
def test_imports_go_down(module: str, path: Path):
    own = _layer(module)
    if own is None or module in TOP:
        return
    bad = sorted(m for m in _imports(path, module)
                 if m not in TOP and _layer(m) not in ALLOWED[own] | {own})
    bad += sorted(m for m in _imports(path, module) if m in TOP - {"reidaug"})
    assert not bad, f"{path}: layer {own} imports {bad}; allowed: {sorted(ALLOWED[own])}"
