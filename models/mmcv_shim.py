"""Make ``mmcv.ops`` importable on ``mmcv-lite`` (no compiled ``mmcv._ext``).

mmpose 1.x top-down inference (RTMPose, HRNet: OpenMMLab, https://github.com/open-mmlab/mmpose)
runs no mmcv op, but mmpose's and mmdet's modules import names from ``mmcv.ops`` at import time
(``batched_nms``, ``DeformConv2d``, ``MultiScaleDeformableAttention``...), and the real
``mmcv/ops/__init__.py`` loads the C++ extension, which mmcv-lite does not ship. Building the
full mmcv 2.1.0 takes ~13.5 minutes here (see ../shared/notes/INSTALL-FACTS.md).

:func:`install` puts a finder first on ``sys.meta_path`` that serves ``mmcv.ops`` and every
``mmcv.ops.<sub>`` as a stand-in module: any public name is a placeholder class (a subclass of
``torch.nn.Module``, so modules that subclass or register it still import) that raises
:class:`~reidaug.errors.DependencyError` when it is instantiated or called. Where the full mmcv
(with ``mmcv._ext``) is installed, :func:`install` does nothing.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import types
from typing import Any, Sequence

logger = logging.getLogger(__name__)

_PREFIX = "mmcv.ops"
_FULL_MMCV_FIX = (
    "mmcv.ops.{name} needs the full mmcv with compiled ops, but only mmcv-lite is installed "
    "(reidaug's pose backends need no mmcv op for top-down inference; this model does). "
    "Fix: build the full mmcv==2.1.0 (about 14 minutes, see ../shared/notes/INSTALL-FACTS.md) "
    "or use a top-down RTMPose/HRNet config."
)


def _dependency_error(name: str) -> Exception:
    # Imported lazily: scripts/install_pose.sh loads this file before reidaug is installed.
    try:
        from reidaug.errors import DependencyError
    except ImportError:  # standalone use by the install script's smoke test
        return ImportError(_FULL_MMCV_FIX.format(name=name))
    return DependencyError(_FULL_MMCV_FIX.format(name=name))


def _placeholder(qualname: str) -> type:
    """A class that imports, subclasses and registers like an op, and raises when used."""
    import torch

    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:  # noqa: N807 (a dunder on purpose)
        raise _dependency_error(qualname)

    short = qualname.rsplit(".", 1)[-1]
    return type(short, (torch.nn.Module,), {"__new__": __new__, "__module__": _PREFIX,
                                             "_reidaug_mmcv_placeholder": True})


class _ShimModule(types.ModuleType):
    """``mmcv.ops`` or one of its submodules: every public attribute is a placeholder."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        cache: dict[str, type] = self.__dict__.setdefault("_placeholders", {})
        if name not in cache:
            cache[name] = _placeholder(f"{self.__name__}.{name}")
        return cache[name]


class _ShimFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname == _PREFIX or fullname.startswith(_PREFIX + "."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _ShimModule(spec.name)
        module.__path__ = []  # a package, so `import mmcv.ops.nms` comes back here
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        module.__dict__["_reidaug_mmcv_shim"] = True


def needs_shim() -> bool:
    """True when mmcv is installed without its compiled ops (mmcv-lite)."""
    if any(isinstance(f, _ShimFinder) for f in sys.meta_path):
        return False
    try:
        if importlib.util.find_spec("mmcv") is None:
            return False  # no mmcv at all: the caller reports the missing package
        return importlib.util.find_spec("mmcv._ext") is None
    except (ImportError, ValueError):
        return False


def install() -> bool:
    """Install the ``mmcv.ops`` stand-in where needed (idempotent); True if it is active."""
    if any(isinstance(f, _ShimFinder) for f in sys.meta_path):
        return True
    if not needs_shim():
        return False
    if _PREFIX in sys.modules and not getattr(sys.modules[_PREFIX], "_reidaug_mmcv_shim", False):
        return False  # a real mmcv.ops is already loaded
    sys.meta_path.insert(0, _ShimFinder())
    logger.debug("mmcv-lite detected: serving mmcv.ops from reidaug.models.mmcv_shim")
    return True
