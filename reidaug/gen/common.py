"""Shared machinery of the generator stages: devices, overlap.

Everything here is model-agnostic, so CamStyle and the pose-guided generators train and
generate the same way:

- :func:`pick_device` — ``auto`` means CUDA when there is one; asking for CUDA without one is a
  clear error. :func:`generator_once` — a generate stage's model on that device, loaded once per thread.
- :func:`to_device` / :func:`images_to_device` / :func:`autocast` — networks and image batches
  on the device (channels_last, pinned memory and bf16 on CUDA).
- :func:`overlapped` — run ``prepare`` (decode, resize), ``compute`` (the model) and ``finish``
  (encode, write) over batches on three threads with bounded queues, so the model never waits
  for I/O. Torch, OpenCV and h5py release the GIL in their heavy parts.
- :func:`generate_pngs` — the generate stages' loop: fakes through :func:`overlapped` to PNG bytes.

Checkpoints, the generator checksum and loss logs are the ground floor's (:mod:`reidaug.io.checkpoint`,
:mod:`reidaug.io.jsonl`); the training loop is :mod:`reidaug.gen.loop`.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterable, Mapping, TypeVar

import numpy as np

from reidaug.errors import ConfigError

T = TypeVar("T")
U = TypeVar("U")
V = TypeVar("V")


# --------------------------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------------------------
def pick_device(device: str, where: str) -> "torch.device":  # noqa: F821
    """``auto`` → ``cuda`` if available else ``cpu``; ``cuda`` / ``cuda:N`` must exist."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"{where}: device {device!r} was asked for, but this machine has no CUDA "
                              f"device (torch {torch.__version__}, cuda available: False). Fix: set device: auto "
                              "or cpu, or run on a GPU machine.")
        return torch.device(device)
    if device == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"{where}: device must be auto, cpu, cuda or cuda:N; found {device!r}.")


def generator_once(ctx: Any, kind: str, load: Callable[..., T]) -> T:
    """A generate stage's model, loaded once per thread (``ctx.memo``) and shared by its chunks:
    ``load(device, amp=..., cpu_bf16=...)`` with the stage's ``params.device`` (:func:`pick_device`),
    ``params.amp`` and ``params.cpu_bf16``, which are also the memo key with ``kind``."""
    p = ctx.params
    device = pick_device(p.device, "params.device")
    return ctx.memo(f"{kind}|{device}|{p.amp}|{p.cpu_bf16}",
                    lambda: load(device, amp=p.amp, cpu_bf16=p.cpu_bf16))


def autocast(device: "torch.device", enabled: bool):  # noqa: F821
    """bf16 autocast on CUDA when ``enabled`` (no GradScaler needed for bf16); a no-op on the CPU."""
    import contextlib

    import torch

    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def inference_autocast(device: "torch.device", amp: bool, cpu_bf16: bool = False):  # noqa: F821
    """Generation's precision: bf16 autocast on CUDA when ``amp``, on the CPU when ``cpu_bf16`` (opt-in: other
    bytes, so the stages key it), else FP32."""
    import contextlib

    import torch

    if device.type == "cpu" and cpu_bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if device.type == "cuda" or not cpu_bf16:
        return autocast(device, amp)
    return contextlib.nullcontext()


def to_uint8_images(y: "torch.Tensor") -> "torch.Tensor":  # noqa: F821
    """A generator's output ``(B, 3, H, W)`` in [-1, 1] (any float dtype) → uint8 ``(B, H, W, 3)`` on its device:
    clamped, scaled to 0..255 and rounded, the one conversion every generate stage stores."""
    import torch

    return y.float().clamp_(-1, 1).add_(1).mul_(127.5).round_().to(torch.uint8).permute(0, 2, 3, 1)


def to_device(net: "torch.nn.Module", device: "torch.device") -> "torch.nn.Module":  # noqa: F821
    """Move a network to ``device``; channels_last on CUDA (the generators' convolutions gain there)."""
    import torch

    return net.to(device, memory_format=torch.channels_last) if device.type == "cuda" else net.to(device)


def images_to_device(images: np.ndarray, device: "torch.device") -> "torch.Tensor":  # noqa: F821
    """RGB uint8 ``(B, H, W, 3)`` → float ``(B, 3, H, W)`` in [-1, 1] on ``device``; on CUDA through
    pinned memory and channels_last, matching :func:`to_device`."""
    import torch

    from reidaug.models.gan_common import images_to_tensor

    t = images_to_tensor(images)
    if device.type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    return t


# --------------------------------------------------------------------------------------------
# Overlapped batch processing
# --------------------------------------------------------------------------------------------
_DONE = object()


def overlapped(items: Iterable[T], prepare: Callable[[T], U], compute: Callable[[U], V],
               finish: Callable[[V], None], *, depth: int = 2) -> dict[str, float]:
    """Run ``finish(compute(prepare(item)))`` for every item, the three steps on three threads.

    ``prepare`` (decode, resize, to tensor) runs ahead by up to ``depth`` batches and ``finish``
    (to uint8, encode, collect) runs behind, so ``compute`` (the model, in the calling thread)
    starts its next batch as soon as it is done with one. Order is kept. An exception in any
    step stops the others and is raised here. Returns seconds spent in each step (their sum
    exceeds the wall time when they overlap).
    """
    import time

    timings = {"prepare": 0.0, "compute": 0.0, "finish": 0.0}
    to_compute: queue.Queue = queue.Queue(maxsize=depth)
    to_finish: queue.Queue = queue.Queue(maxsize=depth)
    errors: list[BaseException] = []
    stop = threading.Event()

    def put(q: queue.Queue, value: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def producer() -> None:
        try:
            for item in items:
                t0 = time.perf_counter()
                value = prepare(item)
                timings["prepare"] += time.perf_counter() - t0
                if not put(to_compute, value):
                    return
        except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(e)
            stop.set()
        finally:
            put(to_compute, _DONE)

    def consumer() -> None:
        try:
            while True:
                try:
                    value = to_finish.get(timeout=0.1)
                except queue.Empty:
                    if stop.is_set():
                        return
                    continue
                if value is _DONE:
                    return
                t0 = time.perf_counter()
                finish(value)
                timings["finish"] += time.perf_counter() - t0
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
            stop.set()

    threads = [threading.Thread(target=producer, daemon=True, name="gen-prepare"),
               threading.Thread(target=consumer, daemon=True, name="gen-finish")]
    for t in threads:
        t.start()
    try:
        while not stop.is_set():
            try:
                value = to_compute.get(timeout=0.1)
            except queue.Empty:
                continue
            if value is _DONE:
                break
            t0 = time.perf_counter()
            out = compute(value)
            timings["compute"] += time.perf_counter() - t0
            if not put(to_finish, out):
                break
    except BaseException as e:  # noqa: BLE001
        errors.append(e)
        stop.set()
    finally:
        if not stop.is_set():
            put(to_finish, _DONE)
        else:
            # drain so a blocked thread can see `stop`
            for q in (to_compute, to_finish):
                try:
                    while True:
                        q.get_nowait()
                except queue.Empty:
                    pass
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return timings


def generate_pngs(batches: Iterable[T], prepare: Callable[[T], U], compute: Callable[[U], Any],
                  model_hw: tuple[int, int], out_hw: tuple[int, int]) -> tuple[list[bytes], dict[str, float]]:
    """The generate stages' loop: ``compute`` makes uint8 ``(B, H, W, 3)`` fakes at ``model_hw``
    (a tensor on any device), :func:`overlapped` with resizing to ``out_hw`` (INTER_AREA) and PNG
    encoding behind it. Returns the PNGs in batch order and the seconds of each step and ``wall``."""
    import time

    import cv2

    from reidaug.data.images import encode_png

    pngs: list[bytes] = []

    def finish(y: Any) -> None:
        for img in y.numpy():
            if out_hw != model_hw:
                img = cv2.resize(img, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_AREA)
            pngs.append(encode_png(img))

    t0 = time.perf_counter()
    timings = overlapped(batches, prepare, lambda item: compute(item).cpu(), finish)  # .cpu(): no copy on the CPU
    return pngs, {"wall": time.perf_counter() - t0, **timings}


def generation_speed(chunk_stats: Iterable[Mapping[str, Any]], images: int) -> tuple[dict[str, Any], str]:
    """What a generate stage's finalize reports of its speed, from the chunks' recorded ``seconds``
    (:func:`generate_pngs`' ``wall`` and ``compute``): ``({"images_per_s", "model_busy"}, "R img/s, model
    busy B% of the time")``."""
    wall = model_s = 0.0
    for stats in chunk_stats:  # timings of the chunks this run (or the killed one before it) made
        wall += float(stats.get("seconds", {}).get("wall", 0.0))
        model_s += float(stats.get("seconds", {}).get("compute", 0.0))
    rate = images / wall if wall else 0.0
    text = f"{rate:.1f} img/s, model busy {100 * model_s / wall if wall else 0:.0f}% of the time"
    return {"images_per_s": round(rate, 2), "model_busy": round(model_s / wall, 3) if wall else None}, text


def run_record(stats: dict[str, Any], rate_key: str) -> dict[str, Any]:
    """The fields of a training chunk's run record (``StageContext.record``) that a train-* stage's
    summary carries: seconds, the rate under ``rate_key``, the step it resumed from."""
    return {k: stats[k] for k in ("seconds", rate_key, "resumed_from") if k in stats}


def timing_text(stats: dict[str, Any], unit: str, rate_key: str) -> str:
    """`` in 120 s on cpu (8.1 img/s), resumed from step 500`` from a chunk's run record ('' if none)."""
    if not stats or stats.get("seconds") is None:
        return ""
    text = f" in {float(stats['seconds']):.0f} s on {stats.get('device', '?')} " \
           f"({float(stats.get(rate_key, 0)):.1f} {unit})"
    if stats.get("resumed_from") is not None:
        text += f", resumed from step {stats['resumed_from']}"
    return text
