"""One exception hierarchy for everything reidaug raises on purpose.

Every message says what failed, where (file, YAML key, stage, chunk, image path), what was
expected and what was found, and how to fix it. The CLI prints a ``ReidAugError`` as one line
and exits non-zero; any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class ReidAugError(Exception):
    """Base class: a failure the user can act on."""

    exit_code = 1


class ConfigError(ReidAugError):
    """A pipeline YAML, a ``--set`` override or a parameter is wrong."""

    exit_code = 2


class GraphError(ReidAugError):
    """The stage graph cannot run: a missing input, a cycle, an output claimed twice."""

    exit_code = 2


class UnknownNameError(ReidAugError, KeyError):
    """A name looked up in a registry does not exist."""

    exit_code = 2

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0] if self.args else ""


class HashError(ReidAugError):
    """A value cannot be hashed deterministically, so it cannot be part of a cache key."""


class CacheError(ReidAugError):
    """A cache entry is unusable in a way that recomputing cannot fix."""


class LockError(ReidAugError):
    """The workspace is locked by another running process."""

    exit_code = 3


class StageError(ReidAugError):
    """A stage failed while computing a chunk."""


class DataError(ReidAugError):
    """Input data is wrong: an unreadable image, an unparseable name, a bad HDF5 file."""


class DependencyError(ReidAugError):
    """An optional package or a model file a stage needs is missing."""


def add_context(err: ReidAugError, prefix: str = "", suffix: str = "") -> ReidAugError:
    """Prefix/suffix an error's message in place (keeps its class and exit code); returns it."""
    err.args = (f"{prefix}{err}{suffix}",) + tuple(err.args[1:])
    return err


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean "x"?' for the nearest choice, or ''."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f' Did you mean "{close[0]}"?' if close else ""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> UnknownNameError:
    """Build the registry error: what was asked, the nearest name, and the full list."""
    choices = sorted(choices)
    return UnknownNameError(
        f'unknown {kind} "{name}".{did_you_mean(name, choices)} '
        f"Known {kind}s: {', '.join(choices) if choices else '(none)'}."
    )
