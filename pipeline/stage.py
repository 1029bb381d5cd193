"""What a stage is: a declaration plus pure functions.

A :class:`StageSpec` declares a stage's name (kebab-case, equal to its CLI verb), a hand-bumped
integer version, its input slots with their default ``<stage>.<output>`` references, its
outputs, a typed parameter model, which parameters do not change results (batch size,
workers, device), and resource needs (GPU). Three functions do the work:

``plan(ctx) -> int``
    How many chunks the stage has, from its parameters and its inputs (e.g. images / chunk_size).
``run_chunk(ctx, i) -> None``
    Compute chunk ``i``; read only ``ctx.inputs`` and ``ctx.params``, write only through
    ``ctx.write_chunk`` (atomic), and take randomness only from ``ctx.rng(i)``.
``finalize(ctx) -> dict`` (optional)
    Combine the chunks into the stage's outputs inside ``ctx.work_dir`` and return a summary
    for ``meta.json``. Runs once, after every chunk exists.

A source stage (no inputs that fix its key) also gives ``fingerprint(params, base_dir)``: a
JSON-able description of its input files (relative path, size, sha256), which is its key.

Parameters that many stages share are declared once here, as bases a stage's parameter class
inherits: :class:`GPUExecParams` (device, amp), :class:`BatchedGPUParams` (plus batch_size and
its CPU / CUDA default), :class:`GenerateParams` (plus the fakes' size),
:class:`TrainCadenceParams` (checkpoint / sample / log cadence) and :class:`GPUTrainParams`
(device, amp and cadence, for a GAN training stage). A base lists the fields that never change
a result in ``NONSEMANTIC``; they stay out of the key.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

from pydantic import (BeforeValidator, ConfigDict, Field, PlainSerializer, ValidationInfo,
                      model_validator)
from typing_extensions import Annotated

from reidaug.pipeline.hashing import FileRef
from reidaug.validation import StrictNumbers

if TYPE_CHECKING:
    from reidaug.pipeline.context import StageContext

# Execution knobs that never change a result; a stage with such a param need not list it.
ALWAYS_NONSEMANTIC = frozenset({"batch_size", "workers", "num_workers", "device"})
#: torch's CPU threads inside a chunk unless a stage sets ``threads``: the thread count changes
#: floating-point reduction order, so training gives other bytes at 1 and at 2 threads; pinning it
#: (rather than torch's default, the machine's core count) makes a cache key mean the same bytes
#: on every machine and under every scheduler. 2 = what the shipped pipelines were keyed with.
DEFAULT_THREADS = 2


def cuda_present() -> bool:
    """Whether a chunk on device ``auto`` would run on CUDA. Cheap where there is no NVIDIA driver
    (no torch import: planning a cached pipeline stays fast); asks torch where there is one."""
    import os

    if not (os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")):
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def numerics_of(device: str, amp: bool) -> str | None:
    """What a result computed on ``device`` with ``amp`` depends on beyond its params: ``None`` for
    the CPU in FP32 (the reference every shipped key was made with), else ``cuda-bf16`` /
    ``cuda-fp32`` — other kernels, other bytes. Part of the cache key, so a cache filled on a GPU
    is never returned to a CPU run (or the reverse) as if it were the same result."""
    on_cuda = device.startswith("cuda") or (device == "auto" and cuda_present())
    if not on_cuda:
        return None
    return f"cuda-{'bf16' if amp else 'fp32'}"

_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_REF = re.compile(r"^([a-z][a-z0-9-]*)\.([a-z_][a-z0-9_]*)$")


class Params(StrictNumbers):
    """Base class of every stage's parameter model: typed, immutable, unknown keys rejected, no
    boolean where a number is expected."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
    #: fields of this class that never change a result (left out of the key with the spec's own)
    NONSEMANTIC: ClassVar[frozenset[str]] = frozenset()
    #: fields added after stages shipped: out of the key while at their default
    UNKEYED_AT_DEFAULT: ClassVar[frozenset[str]] = frozenset()
    #: fields added after stages shipped with a *new* default: out of the key at the value that
    #: does what the stage did before them (so a pipeline that sets it keeps its cache)
    UNKEYED_AT: ClassVar[Mapping[str, Any]] = {}

    def numerics(self) -> str | None:
        """Where this stage's arithmetic differs from the CPU FP32 reference (see :func:`numerics_of`)."""
        return None

    def torch_threads(self) -> int | None:
        """The torch CPU threads each chunk runs on (the runner pins them and runs at most
        cores // threads chunks at once), or None for a stage that runs no torch on the CPU."""
        threads = getattr(self, "threads", None)
        return None if threads is None else int(threads)


class GPUExecParams(Params):
    """Where a network runs. ``amp`` changes bf16 results on CUDA, so it stays in the key unless
    a stage declares otherwise; ``device`` never does (:data:`ALWAYS_NONSEMANTIC`)."""

    UNKEYED_AT_DEFAULT: ClassVar[frozenset[str]] = frozenset({"threads"})

    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    amp: bool = Field(True, description="bf16 autocast and channels_last on CUDA (ignored on the CPU)")
    threads: int = Field(DEFAULT_THREADS, ge=1, le=256, description=(
        "torch CPU threads in a chunk: in the key, since results differ by thread count"))

    def numerics(self) -> str | None:
        return numerics_of(self.device, self.amp)


#: generation batch sizes when ``batch_size`` is unset. CUDA wants large batches. On the CPU the best
#: batch shrinks as the image grows (``bench/generate.py --no-gpu``, quiet 2-core VM, 2026-12-07,
#: BENCHMARKS.md "CPU batch size"): CamStyle's CycleGAN at 256 x 128 is fastest at 2 (8 loses 8%, 16
#: loses 17%: larger activations fall out of cache), at 128 x 64 at 4 (as PG2 at 128 x 64, whose batch
#: 8 lost 7%). So the CPU default is the batch of about CPU_BATCH_PIXELS input pixels (256 x 128 -> 2),
#: at most CPU_BATCH (128 x 64 -> 4). CycleGAN's fakes are bit-identical at every batch size (checked by
#: that script); PG2's float outputs differ by <= 5e-7 across batch sizes and its stored uint8 fakes did
#: not differ in a 32-image check, so the batch stays out of the key.
CPU_BATCH, CUDA_BATCH = 4, 64
CPU_BATCH_PIXELS = 65_536


def cpu_batch_size(size: tuple[int, int] | None) -> int:
    """The CPU default for a model whose input is ``size`` = (height, width) (None: :data:`CPU_BATCH`)."""
    if size is None:
        return CPU_BATCH
    return max(1, min(CPU_BATCH, CPU_BATCH_PIXELS // max(1, int(size[0]) * int(size[1]))))


class BatchedGPUParams(GPUExecParams):
    """A network run over batches: :meth:`batch_size_on` gives the size to use on a device."""

    batch_size: int | None = Field(None, ge=1, le=4096, description=(
        f"images per model call (default: {CUDA_BATCH} on CUDA; on the CPU about {CPU_BATCH_PIXELS:,} input "
        f"pixels per call, at most {CPU_BATCH}: 2 at 256x128, {CPU_BATCH} at 128x64)"))

    def batch_size_on(self, device: Any, size: tuple[int, int] | None = None) -> int:
        """``batch_size``, or the default for ``device`` (a ``torch.device``) and the model's input ``size``."""
        if self.batch_size:
            return self.batch_size
        return CUDA_BATCH if device.type == "cuda" else cpu_batch_size(size)


class OutputSize(Params):
    """The size of a stage's output images: both or neither; unset, the stage's own
    (:attr:`DEFAULT_SIZE` says which, for the messages)."""

    DEFAULT_SIZE: ClassVar[str] = "the generator's size"

    height: int | None = Field(None, ge=8, le=2048, description=(
        "output size (default: the stage's own: the generator's, or each origin image's)"))
    width: int | None = Field(None, ge=8, le=2048)

    @model_validator(mode="after")
    def _size_pair(self) -> "OutputSize":
        if (self.height is None) != (self.width is None):
            raise ValueError(f"height and width go together: set both, or neither ({self.DEFAULT_SIZE})")
        return self

    def out_hw(self, default_hw: tuple[int, int]) -> tuple[int, int]:
        """The output's ``(height, width)``: the one set here, else ``default_hw``."""
        return (self.height, self.width) if self.height is not None else default_hw


class GenerateParams(BatchedGPUParams, OutputSize):
    """A generation stage: device, amp, batch size, and the size of its fakes (default: the generator's).

    ``cpu_bf16`` (opt-in) runs the generator in bf16 autocast on the CPU: BENCHMARKS.md measured CamStyle's
    generator 1.84-1.94x faster at 256 x 128 with pixels at most 14/255 off. Other bytes, so it is part of the
    key (numerics ``cpu-bf16``)."""

    UNKEYED_AT_DEFAULT: ClassVar[frozenset[str]] = BatchedGPUParams.UNKEYED_AT_DEFAULT | {"cpu_bf16"}

    cpu_bf16: bool = Field(False, description=(
        "bf16 autocast on the CPU (~1.9x faster for CamStyle, pixels <= 14/255 off; in the key); CUDA: see amp"))

    def numerics(self) -> str | None:
        on_gpu = numerics_of(self.device, self.amp)
        return on_gpu if on_gpu is not None or not self.cpu_bf16 else "cpu-bf16"


class TrainCadenceParams(Params):
    """How often a resumable training (:mod:`reidaug.gen.loop`) checkpoints, draws and logs, and
    whether its full checkpoint is kept: none of it changes the trained weights."""

    NONSEMANTIC: ClassVar[frozenset[str]] = frozenset({"checkpoint_every", "sample_every", "log_every",
                                                       "keep_checkpoints"})

    checkpoint_every: int = Field(500, ge=1)
    sample_every: int = Field(1000, ge=1)
    log_every: int = Field(50, ge=1)
    keep_checkpoints: bool = False

    def cadence(self) -> dict[str, int]:
        return {"checkpoint_every": self.checkpoint_every, "sample_every": self.sample_every,
                "log_every": self.log_every}


class GPUTrainParams(GPUExecParams, TrainCadenceParams):
    """A GAN training stage's execution knobs: device, amp and the cadence. Here ``amp`` is out of
    the key too (as train-camstyle and train-posegan shipped it)."""

    NONSEMANTIC: ClassVar[frozenset[str]] = TrainCadenceParams.NONSEMANTIC | {"amp"}


def _to_file_ref(value: Any, info: ValidationInfo) -> FileRef:
    if isinstance(value, FileRef):
        return value
    if not isinstance(value, (str, Path)):
        raise ValueError(f"expected a file path; found {type(value).__name__}")
    path = Path(value).expanduser()
    base = (info.context or {}).get("base_dir")
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    if not path.is_file():
        raise ValueError(
            f"expected an existing file; {path} does not exist (relative paths start at the YAML's folder)"
        )
    return FileRef(path)


#: A parameter that names a file (checkpoint, model config). It is part of the cache key by
#: its content (sha256), not by its path: moving the file keeps the key, editing it changes it.
FileParam = Annotated[FileRef, BeforeValidator(_to_file_ref), PlainSerializer(lambda f: str(f.path), return_type=str)]


class NoParams(Params):
    """For stages without parameters."""


def parse_ref(ref: str) -> tuple[str, str]:
    """Split ``"<stage>.<output>"``; raise ValueError with the expected shape otherwise."""
    m = _REF.match(ref)
    if not m:
        raise ValueError(f'"{ref}" is not a "<stage>.<output>" reference (e.g. "ingest.dataset")')
    return m.group(1), m.group(2)


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """The declaration of a stage kind. Instances in a pipeline YAML refer to it by ``name``."""

    name: str
    version: int
    description: str
    params: type[Params]
    run_chunk: Callable[["StageContext", int], None]
    plan: Callable[["StageContext"], int] = lambda ctx: 1
    finalize: Callable[["StageContext"], Mapping[str, Any] | None] | None = None
    # slot -> default "<stage>.<output>" reference ("" = must be bound in the YAML)
    inputs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # slots that may be left unbound (e.g. ingest reads a folder OR an upstream output)
    optional_inputs: frozenset[str] = frozenset()
    # optional slots left out of the key while unbound: slots added after a stage shipped, so
    # the keys of pipelines that do not use them (and everything downstream) stay valid
    unkeyed_if_unbound: frozenset[str] = frozenset()
    # params added after a stage shipped, left out of the key while at their default: the keys of
    # pipelines that do not set them (and everything downstream) stay valid
    unkeyed_at_default: frozenset[str] = frozenset()
    # output name -> relative path inside the cache entry ("chunks" = the chunk files)
    outputs: Mapping[str, str] = dataclasses.field(default_factory=lambda: {"chunks": "chunks"})
    # params that do not change the result: left out of the key
    nonsemantic: frozenset[str] = frozenset()
    # source stages: a description of the input files, part of the key
    fingerprint: Callable[[Params, Path], Any] | None = None
    resources: Mapping[str, float] = dataclasses.field(default_factory=dict)  # e.g. {"GPU": 1}
    # cross-checks of params and which slots are bound, run when the YAML loads (before anything
    # runs): ``check_bindings(params, bound_slots)`` returns a problem and its fix, or None
    check_bindings: Callable[[Params, frozenset[str]], str | None] | None = None

    def __post_init__(self) -> None:
        # Declarations are code, not user input: a wrong one is a programming error.
        if not _NAME.match(self.name):
            raise ValueError(f"stage name {self.name!r} must be kebab-case (e.g. 'extract-pose')")
        if self.version < 1:
            raise ValueError(f"stage {self.name}: version must be >= 1")
        for ref in self.inputs.values():
            if ref:
                parse_ref(ref)
        if not self.unkeyed_if_unbound <= self.optional_inputs:
            raise ValueError(f"stage {self.name}: unkeyed_if_unbound must name optional inputs, found "
                             f"{sorted(self.unkeyed_if_unbound - self.optional_inputs)}")
        unknown = set(self.ignored_in_key) - set(self.params.model_fields)
        if unknown:
            raise ValueError(f"stage {self.name}: nonsemantic names unknown params {sorted(unknown)}")
        unknown = set(self.unkeyed_at_default) - set(self.params.model_fields)
        if unknown:
            raise ValueError(f"stage {self.name}: unkeyed_at_default names unknown params {sorted(unknown)}")
        unknown = set(self.params.UNKEYED_AT) - set(self.params.model_fields)
        if unknown:
            raise ValueError(f"stage {self.name}: UNKEYED_AT names unknown params {sorted(unknown)}")

    @property
    def ignored_in_key(self) -> frozenset[str]:
        """Params left out of the key: the spec's, its parameter class's and the usual execution knobs."""
        return self.nonsemantic | self.params.NONSEMANTIC | (ALWAYS_NONSEMANTIC & set(self.params.model_fields))

    def semantic_params(self, params: Params) -> dict[str, Any]:
        fields = type(params).model_fields
        later = self.unkeyed_at_default | type(params).UNKEYED_AT_DEFAULT
        legacy = type(params).UNKEYED_AT
        return {k: getattr(params, k) for k in fields if k not in self.ignored_in_key
                and not (k in later and getattr(params, k) == fields[k].default)
                and not (k in legacy and getattr(params, k) == legacy[k])}
