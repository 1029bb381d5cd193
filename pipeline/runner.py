"""Run a keyed stage graph on dask, stage by stage, chunk by chunk, resumably.

For each stage (topological order): a finished cache entry means "didn't change, skipping";
otherwise the stage plans its chunk count, the chunks missing from ``<key>.partial/chunks``
run as dask tasks (explicit keys ``<stage>-<key12>-<chunk>``), ``finalize`` combines them,
``meta.json`` is written and the partial folder is renamed into place. A killed run leaves
its finished chunks behind; the same command continues from there and, because each chunk's
randomness comes from ``seed_for(key, chunk)``, ends with the same bytes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import importlib
import logging
import os
import platform
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import yaml

from reidaug.errors import ReidAugError, StageError, add_context
from reidaug.io.atomic import write_json, write_text
from reidaug.io import faults
from reidaug.io.checkpoint import checkpoint_progress
from reidaug.pipeline.cache import Cache, EntryState
from reidaug.pipeline.config import scheduler_kind
from reidaug.pipeline.context import InputHandle, StageContext, release_memo
from reidaug.pipeline.graph import Graph, explain_change
from reidaug.pipeline.stage import StageSpec

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RunOptions:
    scheduler: str = "threads"
    workers: int | None = None
    force: frozenset[str] = frozenset()
    progress: bool | None = None  # None: on when stderr is a TTY
    resume_command: str = ""  # printed when a stage fails


@dataclasses.dataclass
class PlanItem:
    name: str
    spec: str
    key: str
    action: str  # "skip" | "resume" | "run"
    done: int
    total: int | None
    reason: str


@dataclasses.dataclass
class StageResult:
    name: str
    key: str
    action: str
    chunks_run: list[int]
    seconds: float
    entry: Path


@dataclasses.dataclass
class RunReport:
    results: list[StageResult]
    run_dir: Path | None

    def ran(self, name: str) -> list[int]:
        for r in self.results:
            if r.name == name:
                return r.chunks_run
        return []


# -- state records: why a stage reruns ------------------------------------------------------
def _state_path(workspace: Path, name: str) -> Path:
    return workspace / "state" / f"{name}.json"


def _why(graph: Graph, cache: Cache, name: str) -> str:
    """What changed since the last run of ``name`` (its state record), in words."""
    import json

    try:
        last = json.loads(_state_path(cache.workspace, name).read_text()).get("material")
    except (OSError, ValueError):
        last = None
    upstream_names = {slot: ref[0] for slot, ref in graph.nodes[name].inputs.items() if ref}
    return explain_change(last, graph.material[name], upstream_names)


def _resume_reason(why: str, checkpoints: list[tuple[str, dict[str, Any]]]) -> str:
    """Why a partial entry is taken up again: the change, if any, and each training checkpoint it resumes from
    (:func:`checkpoint_progress` of its partial folder)."""
    reason = "interrupted run" + ("" if why == "never ran" else f"; {why}")
    for where, progress in checkpoints:
        reason += f"; resumes {where} from its checkpoint at step {progress.get('step')}"
        reason += f" of {progress['of']}" if progress.get("of") else ""
    return reason


def plan_run(graph: Graph, cache: Cache, targets: list[str] | None = None,
             force: frozenset[str] = frozenset()) -> list[PlanItem]:
    """What a run would do, and why, without running anything."""
    items = []
    for name in graph.closure(targets or list(graph.nodes)):
        key, spec = graph.keys[name], graph.nodes[name].spec.name
        st = cache.state(spec, key)
        why = _why(graph, cache, name)
        if name in force:
            items.append(PlanItem(name, spec, key, "run", 0, st.total, "forced (--force)"))
        elif st.status == "cached":
            items.append(PlanItem(name, spec, key, "skip", st.done, st.total, "didn't change"))
        elif st.status == "partial":
            items.append(PlanItem(name, spec, key, "resume", st.done, st.total,
                                  _resume_reason(why, checkpoint_progress(cache.partial_dir(spec, key)))))
        else:
            items.append(PlanItem(name, spec, key, "run", 0, None, why))
    return items


# -- versions recorded in meta.json ----------------------------------------------------------
_LIBS = ("reidaug", "numpy", "h5py", "dask", "distributed", "torch", "torchvision", "opencv-python", "mmpose",
         "mmcv-lite")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in _LIBS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[lib] = metadata.version(lib)
    return out


# -- executing chunks --------------------------------------------------------------------------
def spec_reference(spec: StageSpec) -> StageSpec | str:
    """What a worker needs to find ``spec``: ``"module:NAME"`` when the spec is a module-level
    object of its stage module (nothing to pickle but a string), else the spec itself (a stage
    defined in a test or a notebook travels as the object)."""
    module = sys.modules.get(getattr(spec.run_chunk, "__module__", ""))
    for attr, value in vars(module).items() if module is not None else ():
        if value is spec:
            return f"{module.__name__}:{attr}"
    return spec


def execute_chunk(spec: StageSpec | str, ctx: StageContext, index: int) -> tuple[int, float]:
    """Run one chunk (on any dask worker). Idempotent: an existing chunk file is not redone."""
    if isinstance(spec, str):
        module, attr = spec.split(":")
        spec = getattr(importlib.import_module(module), attr)
    if ctx.chunk_path(index).exists():
        return index, 0.0
    here = ctx.params.numerics() if hasattr(ctx.params, "numerics") else None
    if here != ctx.numerics:  # e.g. planned on a CPU-only client, run on a GPU worker (device: auto)
        raise StageError(
            f"stage {ctx.stage!r}, chunk {index}: the cache key was made for {ctx.numerics or 'cpu-fp32'} "
            f"arithmetic, but this worker would compute in {here or 'cpu-fp32'} (device "
            f"{getattr(ctx.params, 'device', '?')!r} resolves differently here than where the run was planned). "
            "Fix: set the stage's device to cpu or cuda explicitly, so that the key and the worker agree")
    _pin_threads(ctx, index)
    t0 = time.perf_counter()
    try:
        spec.run_chunk(ctx, index)
    except Exception as e:  # noqa: BLE001 - any chunk failure becomes a StageError with the traceback saved
        tb = traceback.format_exc()
        err_file = ctx.work_dir / "errors" / f"chunk-{index:05d}.txt"
        with contextlib.suppress(OSError):
            write_text(err_file, tb)
        if isinstance(e, ReidAugError):
            raise add_context(e, prefix=f"stage {ctx.stage!r}, chunk {index}: ") from None
        raise StageError(
            f"stage {ctx.stage!r}, chunk {index} failed: {type(e).__name__}: {e} (traceback in {err_file})"
        ) from None
    if not ctx.chunk_path(index).exists():
        raise StageError(
            f"stage {ctx.stage!r}, chunk {index}: run_chunk returned without writing {ctx.chunk_path(index)}; "
            "a stage must write every chunk through ctx.write_chunk"
        )
    faults.point("chunk", ctx.spec_name)  # the fault suite's kill points (inert otherwise)
    return index, time.perf_counter() - t0


def _pin_threads(ctx: StageContext, index: int) -> None:
    """torch's CPU threads are process-wide and change floating-point results: a stage with a
    ``threads`` param (part of its key) gets exactly that many for every chunk, whatever ran before
    it in this process or worker."""
    threads = ctx.params.torch_threads()
    if threads is None:
        return
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if torch.get_num_threads() != threads:
        raise StageError(f"stage {ctx.stage!r}, chunk {index}: torch runs {torch.get_num_threads()} CPU threads and "
                         f"refused params.threads = {threads}; the key promises results at {threads}. Fix: a torch "
                         "build that honours set_num_threads, or set threads to what it runs")


class Executor:
    """Runs a stage's missing chunks on dask: local threads or processes, or a distributed cluster."""

    def __init__(self, scheduler: str, workers: int | None) -> None:
        self.kind = scheduler_kind(scheduler)
        self.scheduler = scheduler
        self.workers = workers or os.cpu_count() or 1
        self._client = None
        self._cluster = None

    def _get_client(self):
        if self._client is None:
            from distributed import Client, LocalCluster

            # distributed configures its own loggers on import; keep them to real problems
            for name in ("distributed", "distributed.client", "distributed.scheduler", "distributed.worker",
                         "distributed.nanny", "distributed.core", "distributed.comm"):
                logging.getLogger(name).setLevel(logging.ERROR)
            if self.kind == "distributed":
                self._cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                             dashboard_address=None, silence_logs=logging.ERROR)
                self._client = Client(self._cluster)
            else:
                try:
                    self._client = Client(self.scheduler, timeout="10s")
                except (OSError, TimeoutError) as e:
                    raise ReidAugError(
                        f"cannot connect to the dask scheduler at {self.scheduler}: {e}. Check the address "
                        "(dask scheduler prints it) and that this machine can reach it."
                    ) from None
            log.info("dask cluster: %s", self._client.dashboard_link or self.scheduler)
        return self._client

    def close(self) -> None:
        with contextlib.suppress(Exception):  # shutting down after a failure must not mask it
            if self._client is not None:
                self._client.close(timeout=10)
            if self._cluster is not None:
                self._cluster.close(timeout=10)
        self._client = self._cluster = None

    def run(self, spec: StageSpec, ctx: StageContext, todo: list[int], on_done: Callable[[int, float], None]) -> None:
        import dask

        target = spec_reference(spec)
        prefix = f"{ctx.stage}-{ctx.key[:12]}"
        if self.kind in ("distributed", "address"):
            client = self._get_client()
            resources = chunk_resources(spec, ctx)
            if resources:
                self._check_resources(client, spec.name, resources)
            from distributed import as_completed

            futures = [
                client.submit(execute_chunk, target, ctx, i, key=f"{prefix}-{i:05d}", pure=False,
                              resources=resources or None, retries=0)
                for i in todo
            ]
            try:
                for fut in as_completed(futures):
                    index, seconds = fut.result()
                    on_done(index, seconds)
            finally:
                pending = [f for f in futures if not f.done()]
                if pending:
                    client.cancel(pending)
            return

        from dask.callbacks import Callback

        tasks = [dask.delayed(execute_chunk, pure=False)(target, ctx, i, dask_key_name=f"{prefix}-{i:05d}")
                 for i in todo]

        class _Progress(Callback):
            def _posttask(self, key, result, dsk, state, worker_id):
                if isinstance(result, tuple) and len(result) == 2 and str(key).startswith(prefix):
                    on_done(*result)

        num_workers = 1 if self.scheduler == "sync" else concurrent_chunks(self.workers, ctx)
        if num_workers < self.workers and len(todo) > 1:
            log.info("stage %s: %d chunks at a time, not %d: each runs torch on %d threads and this machine has %d "
                     "cores", ctx.stage, num_workers, self.workers, ctx.params.torch_threads(), usable_cores())
        sched = "sync" if self.scheduler == "sync" else self.kind
        with _Progress():
            dask.compute(*tasks, scheduler=sched, num_workers=num_workers)

    @staticmethod
    def _check_resources(client, stage: str, resources: dict[str, float]) -> None:
        workers = client.scheduler_info().get("workers", {})
        for res, amount in resources.items():
            if not any(w.get("resources", {}).get(res, 0) >= amount for w in workers.values()):
                raise ReidAugError(
                    f"stage {stage} needs a worker with resource {res}={amount} (it computes on the GPU), but none "
                    f"of the {len(workers)} workers declares it. Start GPU workers with "
                    f"`dask worker <scheduler address> --resources {res}={amount}`, or set the stage's device: cpu, "
                    "or run with --scheduler threads."
                )


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's share), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def concurrent_chunks(workers: int, ctx: StageContext) -> int:
    """How many chunks of a stage run at once on the local schedulers: ``workers``, but no more than
    ``cores // threads`` for a stage that runs torch on ``threads`` CPU threads per chunk (its key pins the
    thread count, so it is the concurrency that gives way): two chunks of 2 OpenMP threads each on 2 cores
    ran 12x slower than one on a loaded machine; on a quiet one the cap costs nothing (bench/threads.py,
    BENCHMARKS.md "CPU thread budget on a real stage")."""
    threads = ctx.params.torch_threads()
    if not threads or (ctx.numerics or "").startswith("cuda"):  # no torch threads to share, or on a GPU
        return workers
    return max(1, min(workers, usable_cores() // int(threads)))


def chunk_resources(spec: StageSpec, ctx: StageContext) -> dict[str, float]:
    """The dask resources a chunk of ``spec`` asks a worker for: the stage's own, plus ``GPU: 1`` when it
    computes on CUDA (its key's numerics say so: device cuda, or auto where the run was planned on a
    machine with CUDA; or a device param naming cuda), so a cluster never sends GPU work to a CPU worker."""
    resources = dict(spec.resources)
    device = str(getattr(ctx.params, "device", "") or "")
    if (ctx.numerics or "").startswith("cuda") or device.startswith("cuda"):
        resources.setdefault("GPU", 1)
    return resources


def _progress_bar(total: int, initial: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="chunk", disable=not enabled, leave=False,
                dynamic_ncols=True)


# -- the run ---------------------------------------------------------------------------------
def resolved_config(graph: Graph) -> dict[str, Any]:
    cfg = graph.loaded.config
    stages = {}
    for name, node in graph.nodes.items():
        entry: dict[str, Any] = {}
        if node.spec.name != name:
            entry["uses"] = node.spec.name
        entry["params"] = node.params.model_dump(mode="json")
        bound = {slot: f"{r[0]}.{r[1]}" for slot, r in node.inputs.items() if r}
        if bound:
            entry["inputs"] = bound
        entry["key"] = graph.keys[name]
        stages[name] = entry
    return {
        "name": cfg.name,
        "source": str(graph.loaded.path),
        "execution": cfg.execution.model_dump(mode="json"),
        "stages": stages,
    }


def prepare_run_dir(workspace: Path, graph: Graph) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = workspace / "runs" / f"{stamp}-{os.getpid()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "config.yaml", yaml.safe_dump(resolved_config(graph), sort_keys=False))
    return run_dir


def _handles(graph: Graph, cache: Cache, name: str) -> dict[str, InputHandle | None]:
    out: dict[str, InputHandle | None] = {}
    for slot, ref in graph.nodes[name].inputs.items():
        if ref is None:
            out[slot] = None
            continue
        up, output = ref
        up_node = graph.nodes[up]
        key = graph.keys[up]
        meta = cache.load_meta(up_node.spec.name, key, repair=True)
        if meta is None:
            raise StageError(f"stage {name!r} needs {up}.{output}, whose cache entry {key[:12]} is missing")
        out[slot] = InputHandle(up, output, key, cache.entry_dir(up_node.spec.name, key),
                                up_node.spec.outputs[output], meta)
    return out


def run_pipeline(
    graph: Graph,
    workspace: Path,
    targets: list[str] | None = None,
    options: RunOptions | None = None,
    run_dir: Path | None = None,
) -> RunReport:
    options = options or RunOptions()
    workspace = Path(workspace).resolve()  # workers on other machines/folders need absolute paths
    cache = Cache(workspace)
    names = graph.closure(targets or list(graph.nodes))
    executor = Executor(options.scheduler, options.workers)
    # one bar per running stage, drawn on stderr, only for an interactive terminal
    progress = (sys.stdout.isatty() and sys.stderr.isatty()) if options.progress is None else options.progress
    results: list[StageResult] = []
    try:
        for n_done, name in enumerate(names, start=1):
            try:
                results.append(_run_stage(graph, cache, name, options, executor, progress))
            finally:
                release_memo(graph.keys[name])  # the models and tables its chunks loaded (ctx.memo)
            log.info("Completed %d out of %d stages", n_done, len(names))
    finally:
        executor.close()
    return RunReport(results, run_dir)


def _run_stage(graph: Graph, cache: Cache, name: str, options: RunOptions, executor: Executor,
               progress: bool) -> StageResult:
    node = graph.nodes[name]
    spec = node.spec
    key = graph.keys[name]
    t_start = time.perf_counter()
    forced = name in options.force
    st: EntryState = cache.state(spec.name, key, repair=True)
    if st.status == "cached" and not forced:
        log.info("Stage '%s' didn't change, skipping", name)
        write_json(_state_path(cache.workspace, name), {"key": key, "material": graph.material[name]})
        return StageResult(name, key, "skip", [], 0.0, cache.entry_dir(spec.name, key))

    why = "forced" if forced else _why(graph, cache, name)
    inputs = _handles(graph, cache, name)
    partial = cache.prepare(spec.name, key, forced=forced)  # before plan(): plan may write into it
    ctx = StageContext(stage=name, spec_name=spec.name, key=key, params=node.params, inputs=inputs,
                       work_dir=partial, base_dir=graph.base_dir,
                       lineage={n: graph.keys[n] for n in graph.closure([name])},
                       numerics=graph.material[name].get("numerics"))
    try:
        t0 = time.perf_counter()
        num_chunks = int(spec.plan(ctx))
        t_plan = time.perf_counter() - t0
    except ReidAugError as e:
        raise add_context(e, prefix=f"stage {name!r} (planning): ") from None
    if num_chunks < 0:
        raise StageError(f"stage {name!r}: plan() returned {num_chunks} chunks")
    ctx = dataclasses.replace(ctx, num_chunks=num_chunks)
    cache.record_plan(spec.name, key, {"num_chunks": num_chunks, "key": key, "forced": forced,
                                       "material": graph.material[name]})
    todo = cache.missing_chunks(spec.name, key, num_chunks)
    done = num_chunks - len(todo)
    checkpoints = [] if forced else checkpoint_progress(partial)
    if done or checkpoints:  # a training's one chunk is not done until it ends: its checkpoints say where it is
        log.info("Stage '%s' (%s): resuming, %d/%d chunks to do (%s)", name, key[:12], len(todo), num_chunks,
                 _resume_reason(why, checkpoints))
    else:
        log.info("Stage '%s' (%s): running, %d/%d chunks to do (%s)", name, key[:12], len(todo), num_chunks, why)

    chunk_seconds: list[float] = []
    ran: list[int] = []
    bar = _progress_bar(num_chunks, num_chunks - len(todo), name, progress)

    def on_done(index: int, seconds: float) -> None:
        ran.append(index)
        chunk_seconds.append(seconds)
        bar.update(1)

    t0 = time.perf_counter()
    try:
        if todo:
            executor.run(spec, ctx, todo, on_done)
    except ReidAugError as e:
        bar.close()
        raise StageFailedError(name, str(e), partial, options.resume_command) from None
    except Exception as e:  # a dask/distributed failure outside the chunk function
        bar.close()
        raise StageFailedError(name, f"{type(e).__name__}: {e}", partial, options.resume_command) from e
    bar.close()
    t_chunks = time.perf_counter() - t0

    t0 = time.perf_counter()
    try:
        summary = dict(spec.finalize(ctx) or {}) if spec.finalize else {}
    except ReidAugError as e:
        raise StageFailedError(name, f"finalize: {e}", partial, options.resume_command) from None
    except Exception as e:  # noqa: BLE001 - any finalize failure becomes a StageError with the traceback saved
        tb = traceback.format_exc()
        write_text(partial / "errors" / "finalize.txt", tb)
        raise StageFailedError(name, f"finalize failed: {type(e).__name__}: {e} "
                                     f"(traceback in {partial / 'errors' / 'finalize.txt'})",
                               partial, options.resume_command) from None
    t_finalize = time.perf_counter() - t0

    meta = {
        "key": key,
        "stage": name,
        "spec": spec.name,
        "version": spec.version,
        "params": node.params.model_dump(mode="json"),
        "material": graph.material[name],
        "num_chunks": num_chunks,
        "outputs": dict(spec.outputs),
        "summary": summary,
        "versions": library_versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "timings": {
            "plan_s": round(t_plan, 4),
            "chunks_wall_s": round(t_chunks, 4),
            "chunks_run": len(ran),
            "chunk_mean_s": round(sum(chunk_seconds) / len(chunk_seconds), 4) if chunk_seconds else None,
            "chunk_max_s": round(max(chunk_seconds), 4) if chunk_seconds else None,
            "finalize_s": round(t_finalize, 4),
            "scheduler": options.scheduler,
        },
    }
    try:
        entry = cache.commit(spec.name, key, meta)
    except ReidAugError as e:
        raise StageFailedError(name, str(e), partial, options.resume_command) from None
    write_json(_state_path(cache.workspace, name), {"key": key, "material": graph.material[name]})
    seconds = time.perf_counter() - t_start
    log.info("Stage '%s' done in %.1f s (%d chunks run)", name, seconds, len(ran))
    return StageResult(name, key, "resume" if done else "run", sorted(ran), seconds, entry)


class StageFailedError(StageError):
    """A stage failed; the message says which chunk, where the details are, and how to resume."""

    def __init__(self, stage: str, reason: str, partial: Path, resume: str) -> None:
        msg = f"stage {stage!r} failed: {reason.rstrip('.')}. Finished chunks are kept in {partial}."
        if resume:
            msg += f" Fix the cause, then resume with: {resume}"
        super().__init__(msg)
        self.stage = stage

    def __reduce__(self):
        return (StageError, (str(self),))
