"""The ``reidaug`` command line (click).

User mistakes (``ReidAugError``) become one clear line and a non-zero exit; a traceback is
shown only with ``--debug``. Only this module configures logging handlers.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import shlex
import shutil
import sys
from importlib import resources
from pathlib import Path

import click

from reidaug import __version__
from reidaug.errors import ConfigError, DataError, ReidAugError, add_context

log = logging.getLogger("reidaug")


# -- logging ---------------------------------------------------------------------------------
def _setup_logging(verbose: int) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logging.WARNING if verbose < 0 else (logging.INFO if verbose == 0 else logging.DEBUG)
    handler.setLevel(level)
    if verbose <= 0:  # third-party INFO (mmengine, ...) goes to the run log only; -v shows it
        handler.addFilter(_own_info_only)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for noisy in ("distributed", "asyncio", "tornado", "bokeh", "fsspec", "matplotlib", "PIL", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _own_info_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or record.name == "reidaug" or record.name.startswith("reidaug.")


def _log_to_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)
    return handler


def _stream_handlers(stream) -> list[logging.StreamHandler]:
    """Every stream handler (root and named loggers) writing to ``stream``."""
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    return [h for lg in loggers for h in lg.handlers
            if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is stream]


@contextlib.contextmanager
def _native_stderr_to(path: Path, enabled: bool):
    """Send what native code writes to file descriptor 2 (TFLite, absl, mediapipe, glog) to ``path``.

    Python's own output (logging, click, progress) keeps going to the terminal: ``sys.stderr`` and the
    stream handlers bound to it point at a copy of the original descriptor for the duration, and back
    after (handlers made during the run too). fd 2 is given back first thing on the way out, whatever
    failed. Does nothing where ``sys.stderr`` is not fd 2 (captured by a test runner) or when not
    ``enabled`` (``-v`` / ``--debug`` show everything). Worker processes of the processes /
    distributed schedulers inherit the redirection: their Python warnings go to the log too.
    """
    try:
        sys.stderr.flush()
        redirect = enabled and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        redirect = False
    if not redirect:
        yield
        return
    saved = os.dup(2)
    old = sys.stderr
    terminal = None
    try:
        terminal = open(os.dup(saved), "w", buffering=1, encoding=getattr(old, "encoding", None) or "utf-8",
                        errors="backslashreplace")
        log_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.dup2(log_fd, 2)
        finally:
            os.close(log_fd)
        for h in _stream_handlers(old):
            h.setStream(terminal)
        sys.stderr = terminal
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        sys.stderr = old
        if terminal is not None:
            for h in _stream_handlers(terminal):
                h.setStream(old)
            with contextlib.suppress(OSError, ValueError):
                terminal.close()


class _Group(click.Group):
    """Turn ReidAugError into one line + exit code; keep tracebacks for --debug and for bugs."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ReidAugError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"Error: {e}", err=True)
            sys.exit(e.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="reidaug")
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.option("-v", "--verbose", count=True, help="More log output.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool, verbose: int, quiet: bool) -> None:
    """reidaug: cached, resumable data augmentation for person re-identification."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    ctx.obj["verbose"] = verbose
    _setup_logging(-1 if quiet else verbose)


# -- shared helpers ----------------------------------------------------------------------------
def _bundled(name: str) -> Path | None:
    try:
        ref = resources.files("reidaug.configs") / f"{name}.yaml"
    except ModuleNotFoundError:
        return None
    return Path(str(ref)) if ref.is_file() else None


def _pipeline_path(spec: str) -> Path:
    p = Path(spec)
    if p.is_file():
        return p
    bundled = _bundled(spec) if not p.suffix else None
    if bundled is not None:
        return bundled
    raise ConfigError(
        f"pipeline file not found: {spec} (from {Path.cwd()}). Give a path such as configs/demo.yaml, "
        "or the name of a bundled pipeline: demo, selftest"
    )


def _load(pipeline: str, sets: tuple[str, ...], strict: bool = False):
    from reidaug.pipeline.config import load_pipeline
    from reidaug.pipeline.graph import build_graph
    from reidaug.stages import STAGES

    path = _pipeline_path(pipeline)
    loaded = load_pipeline(path, overrides=list(sets))
    if strict:  # --strict: every ingest stage fails on a bad file instead of quarantining it
        ingests = [n for n, c in loaded.config.stages.items() if (c.uses or n) == "ingest"]
        loaded = load_pipeline(path, overrides=[*sets, *(f"stages.{n}.params.strict=true" for n in ingests)])
    graph = build_graph(loaded, STAGES)
    return loaded, graph


def _workspace(loaded, override: str | None) -> Path:
    """Absolute, so that dask workers started elsewhere write to the same place."""
    if override:
        return Path(override).expanduser().resolve()
    if loaded.config.workspace:
        w = Path(loaded.config.workspace).expanduser()
        return (w if w.is_absolute() else loaded.base_dir / w).resolve()
    return (Path("workspace") / loaded.config.name).resolve()


def _check_stage(graph, name: str, option: str) -> None:
    from reidaug.errors import unknown_name

    if name not in graph.nodes:
        err = unknown_name("stage", name, graph.nodes)
        raise ConfigError(f"{option} {name}: {err} (stages of pipeline {graph.loaded.path})")


def _print_plan(items, graph) -> None:
    width = max(len(i.name) for i in items)
    for it in items:
        if it.action == "skip":
            state = "skip (cached)"
        elif it.action == "resume":
            state = f"resume ({it.done}/{it.total} chunks done)"
        else:
            state = "run"
        click.echo(f"  {it.name:<{width}}  {it.key[:12]}  {state:<28} {it.reason if it.action != 'skip' else ''}")


def _execute(loaded, graph, targets, workspace, dry_run, force, scheduler, workers, wait, argv, progress=None):
    from reidaug.pipeline.cache import Cache
    from reidaug.pipeline.config import scheduler_kind
    from reidaug.pipeline.lock import WorkspaceLock
    from reidaug.pipeline.runner import RunOptions, plan_run, prepare_run_dir, run_pipeline

    for f in force:
        _check_stage(graph, f, "--force")
    cache = Cache(workspace)
    items = plan_run(graph, cache, targets, frozenset(force))
    if dry_run:
        click.echo(f"Plan for {loaded.path} (workspace {workspace}):")
        _print_plan(items, graph)
        todo = sum(1 for i in items if i.action != "skip")
        click.echo(f"{todo} of {len(items)} stages to run; nothing was run (--dry-run).")
        return
    scheduler = scheduler or loaded.config.execution.scheduler
    workers = workers or loaded.config.execution.workers
    scheduler_kind(scheduler)  # a typo fails here, before the lock and the run folder
    _usable_workspace(workspace)
    obj = click.get_current_context().obj or {}
    quiet_native = not obj.get("debug") and not obj.get("verbose")
    with WorkspaceLock(workspace, wait=wait):
        run_dir = prepare_run_dir(workspace, graph)
        handler = _log_to_file(run_dir / "run.log")
        try:
            log.info("Pipeline %s: %d stages, workspace %s, scheduler %s (log: %s)",
                     loaded.config.name, len(items), workspace, scheduler, run_dir / "run.log")
            options = RunOptions(scheduler=scheduler, workers=workers, force=frozenset(force),
                                 progress=progress, resume_command="reidaug " + shlex.join(argv))
            # third-party native log lines (TFLite, absl, mediapipe) go to run.log, not the terminal
            with _native_stderr_to(run_dir / "run.log", quiet_native):
                report = run_pipeline(graph, workspace, targets, options, run_dir=run_dir)
        except ReidAugError as e:
            logging.getLogger("reidaug.run").debug("run failed", exc_info=True)  # goes to run.log only
            raise add_context(e, suffix=f" (log: {run_dir / 'run.log'})") from None
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()
    _print_outputs(report, graph)
    _write_report(graph, workspace, run_dir)


def _write_report(graph, workspace: Path, run_dir: Path) -> None:
    """The run's HTML report (``WORKSPACE/report.html``); a report that cannot be written never fails the run."""
    from reidaug.report import report_pipeline

    try:
        path = report_pipeline(graph, workspace, run_dir=run_dir)
    except Exception as e:  # noqa: BLE001 - the run itself succeeded; its report is a view of it
        if (click.get_current_context().obj or {}).get("debug"):
            raise
        click.echo(f"\nreport: not written ({type(e).__name__}: {e}); try: reidaug report {workspace} "
                   "(--debug shows the traceback)", err=True)
        return
    click.echo(f"\nreport: {path}")


def _usable_workspace(workspace: Path) -> None:
    """Create the workspace and prove it is writable, or say why not in one line."""
    try:
        workspace.mkdir(parents=True, exist_ok=True)
        probe = workspace / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(
            f"cannot use workspace {workspace}: {e.strerror or e} ({type(e).__name__}). "
            "Give a writable folder with --workspace, or fix `workspace:` in the pipeline YAML."
        ) from None


def _print_outputs(report, graph) -> None:
    click.echo("")
    click.echo(f"Outputs ({len(report.results)} stages):")
    width = max(len(r.name) for r in report.results)
    for r in report.results:
        click.echo(f"  {r.name:<{width}}  {r.action:<6} {r.entry}")
    for r in report.results:
        try:
            summary = json.loads((r.entry / "meta.json").read_text()).get("summary", {})
        except (OSError, ValueError):
            continue
        lines = summary.get("report", []) if isinstance(summary, dict) else []
        if lines:
            click.echo(f"\n[{r.name}]")
            for line in lines:
                click.echo(f"  {line}")


_common_run_options = [
    click.option("--workspace", "-w", type=click.Path(file_okay=False), help="Workspace folder (cache, runs, locks)."),
    click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                 help="Override a YAML value, e.g. stages.ingest.params.chunk_size=64 (repeatable)."),
    click.option("--scheduler", help="threads | processes | distributed | tcp://HOST:PORT (default: from YAML)."),
    click.option("--workers", type=click.IntRange(1), help="Parallel chunks (default: from YAML, else CPU count)."),
    click.option("--dry-run", is_flag=True, help="Print the plan: each stage, its key, skip/resume/run and why."),
    click.option("--wait", is_flag=True, help="Wait for a running reidaug on this workspace instead of failing."),
    click.option("--strict", is_flag=True, help="ingest fails on the first bad file instead of quarantining it."),
]


def _with(options):
    def deco(f):
        for opt in reversed(options):
            f = opt(f)
        return f
    return deco


# -- commands --------------------------------------------------------------------------------
@main.command()
@click.argument("pipeline")
@_with(_common_run_options)
@click.option("--force", multiple=True, metavar="STAGE", help="Recompute STAGE even if cached (repeatable).")
@click.option("--until", metavar="STAGE", help="Run STAGE and what it needs, nothing after it.")
def run(pipeline, workspace, sets, scheduler, workers, dry_run, wait, strict, force, until):
    """Run a pipeline YAML (or a bundled one: demo, selftest)."""
    loaded, graph = _load(pipeline, sets, strict)
    targets = None
    if until:
        _check_stage(graph, until, "--until")
        targets = [until]
    ws = _workspace(loaded, workspace)
    _execute(loaded, graph, targets, ws, dry_run, force, scheduler, workers, wait, sys.argv[1:])


@main.command()
@click.argument("name")
@click.option("-c", "--config", "pipeline", default="configs/demo.yaml", show_default=True,
              help="Pipeline YAML that defines the stage and its upstream.")
@_with(_common_run_options)
@click.option("--force", "force_this", is_flag=True, help="Recompute this stage even if cached.")
def stage(name, pipeline, workspace, sets, scheduler, workers, dry_run, wait, strict, force_this):
    """Run one stage NAME, computing whatever it needs upstream that is not cached."""
    if pipeline == "configs/demo.yaml" and not Path(pipeline).is_file():
        pipeline = "demo"
    loaded, graph = _load(pipeline, sets, strict)
    _check_stage(graph, name, "stage")
    ws = _workspace(loaded, workspace)
    _execute(loaded, graph, [name], ws, dry_run, (name,) if force_this else (), scheduler, workers, wait,
             sys.argv[1:])


@main.command("stages")
@click.argument("name", required=False)
def list_stages(name):
    """List the stage kinds a pipeline can use, or the parameters of one."""
    from reidaug.stages import STAGES, get_stage

    if name is None:
        width = max(len(n) for n in STAGES)
        for n, spec in STAGES.items():
            click.echo(f"  {n:<{width}}  v{spec.version}  {spec.description}")
        click.echo("\n`reidaug stages NAME` shows a stage's parameters, inputs and outputs.")
        return
    spec = get_stage(name)
    click.echo(f"{spec.name} (version {spec.version}): {spec.description}")
    click.echo("inputs:  " + (", ".join(f"{slot} <- {ref or '(bind in YAML)'}"
                                         + (" (optional)" if slot in spec.optional_inputs else "")
                                         for slot, ref in spec.inputs.items()) or "(none: a source stage)"))
    click.echo("outputs: " + ", ".join(spec.outputs))
    click.echo("params:")
    for field, info in spec.params.model_fields.items():
        default = "(required)" if info.is_required() else repr(info.get_default(call_default_factory=True))
        flag = "  [not in the key]" if field in spec.ignored_in_key else ""
        click.echo(f"  {field} = {default}{flag}")
        if info.description:
            click.echo(f"      {info.description}")
    if spec.name == "ingest":  # its `options` depend on the format: list them from the option classes
        import dataclasses

        from reidaug.data.datasets import PARSERS

        click.echo("format options (params.options), with their defaults:")
        for fmt, parser in PARSERS.items():
            opts = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(parser.options))
            click.echo(f"  {fmt}: {opts or '(none)'}")
        click.echo("  (docstring of reidaug.data.datasets: what each format reads and how ids, cameras and "
                   "splits are found)")


@main.command()
@click.argument("pipeline")
@click.option("--workspace", "-w", type=click.Path(file_okay=False))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE")
@click.option("--full-keys", is_flag=True, help="Whole keys (64 hex digits) instead of their first 12.")
def status(pipeline, workspace, sets, full_keys):
    """Table of stage, key, state (cached / partial n/m / missing), outputs, size, last run."""
    from reidaug.pipeline.cache import Cache, dir_size

    loaded, graph = _load(pipeline, sets)
    ws = _workspace(loaded, workspace)
    cache = Cache(ws)
    rows = [("stage", "key", "state", "outputs", "size", "last run")]
    for name, node in graph.nodes.items():
        key = graph.keys[name]
        st = cache.state(node.spec.name, key)
        if st.status == "cached":
            state, path = "cached", cache.entry_dir(node.spec.name, key)
            when = (st.meta or {}).get("created", "")
        elif st.status == "partial":
            state = f"partial {st.done}/{st.total if st.total is not None else '?'}"
            path = cache.partial_dir(node.spec.name, key)
            when = _dt.datetime.fromtimestamp(path.stat().st_mtime).isoformat(timespec="seconds")
        else:
            state, path, when = "missing", None, ""
        size = _human(dir_size(path)) if path else "-"
        rows.append((name, key if full_keys else key[:12], state, ", ".join(node.spec.outputs), size, when))
    _table(rows)
    click.echo(f"workspace: {ws}")


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--workspace", "-w", type=click.Path(file_okay=False), help="Workspace of the pipeline YAMLs.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="The same overrides the run used.")
@click.option("--baseline", "-b", help="Arm to take paired differences against (a run name without -s<seed>).")
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "json"]), default="md", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write here instead of the terminal.")
@click.option("--records", type=click.Path(file_okay=False, exists=True),
              help="Records folder (`reidaug archive --to`): a stage not in the cache is read from its record.")
def compare(sources, workspace, sets, baseline, fmt, output, records):
    """Table of re-ID runs: the params that differ, rank-1 / rank-5 / mAP (mean ± std over the seeds of
    runs that differ only by seed) and, with --baseline, paired differences per seed.

    SOURCES: run folders (`reidaug train -o`), train-reid cache entries, or pipeline YAMLs (their
    train-reid stages, read from the cache, or with --records from a record of the same key; nothing
    is trained)."""
    from reidaug.eval.compare import Run, compare as compare_runs, read_run, render

    runs = []
    for src in sources:
        if src.endswith((".yaml", ".yml")) or _bundled(src) is not None:
            from reidaug.pipeline.cache import Cache
            from reidaug.pipeline.records import find_record

            loaded, graph = _load(src, sets)
            cache = Cache(_workspace(loaded, workspace))
            for name, node in graph.nodes.items():
                if node.spec.name != "train-reid":
                    continue
                key = graph.keys[name]
                data = node.inputs["data"][0]
                labels = {"data_label": data, "init_label": _arm_of(node.inputs.get("init_model")),
                          "init_group": _seedless_key(graph, node.inputs.get("init_model")),
                          "eval_label": _arm_of(node.inputs.get("eval_data"), strip_seed=False)}
                if cache.state(node.spec.name, key).status == "cached":
                    runs.append(read_run(cache.entry_dir(node.spec.name, key) / "run", name=name, **labels))
                elif (record := find_record(records, node.spec.name, key)) is not None:
                    runs.append(read_run(record / "run", name=name, **labels))
                else:
                    runs.append(Run(name=name, folder=Path(), seed=int(node.params.seed), params={}, data="",
                                    data_label=data, evaluation={}, metrics=None, status="missing"))
        else:
            runs.append(read_run(src))
    text = render(compare_runs(runs, baseline), fmt)
    if output:
        from reidaug.io.atomic import write_text

        write_text(output, text)
        click.echo(f"wrote {output}")
    else:
        click.echo(text, nl=False)


def _seedless_key(graph, binding) -> str | None:
    """What the stage an ``init_model`` slot is bound to was computed from, less its ``seed``: its key
    material (stage, version, params, inputs' keys) hashed without the seed param, and, where it was
    itself fine-tuned, with its own init's seedless key. The seeds of one pre-training arm share it;
    same-named stages of two pipelines that differ in anything else do not."""
    from reidaug.pipeline.hashing import stable_hash

    if not binding:
        return None
    stage, output = binding
    material = dict(graph.material[stage])
    material["params"] = {k: v for k, v in material["params"].items() if k != "seed"}
    if (init := graph.nodes[stage].inputs.get("init_model")) is not None:
        material["inputs"] = dict(material["inputs"]) | {"init_model": _seedless_key(graph, init)}
    return stable_hash([material, output])


def _arm_of(binding, strip_seed: bool = True) -> str | None:
    """The stage an input slot is bound to (``syn-raw-s0.model`` -> ``syn-raw``; its seed suffix off)."""
    from reidaug.eval.compare import SEED_SUFFIX

    if not binding:
        return None
    stage = str(binding[0]).rsplit(".", 1)[0]
    m = SEED_SUFFIX.match(stage) if strip_seed else None
    return m["arm"] if m else stage


@main.command()
@click.argument("pipeline")
@click.option("--to", "dest", required=True, type=click.Path(file_okay=False),
              help="Records folder (e.g. bench/results/records, committed beside the code).")
@click.option("--workspace", "-w", type=click.Path(file_okay=False), help="Workspace of the pipeline YAML.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="The same overrides the run used.")
@click.option("--kind", "kinds", multiple=True, metavar="STAGE_KIND",
              help="Stage kinds to keep (repeatable; default: the measuring ones, train-reid and the score "
                   "and evaluate stages).")
@click.option("--max-file-kb", default=2048, show_default=True, type=click.IntRange(1),
              help="Report files larger than this are left out (and named).")
@click.option("--strict", is_flag=True,
              help="Exit 1 when a finished stage's reports differ from its record (a check that a stage gives "
                   "the same numbers on this machine); without it that is a warning.")
def archive(pipeline, dest, workspace, sets, kinds, max_file_kb, strict):
    """Keep the records of a pipeline's finished measuring stages: each cache entry's meta.json and text
    reports (metrics, run config, training log), no weights or images, under the cache's key in DEST.

    Records outlive the machine: `reidaug compare PIPELINE --records DEST` reads a train-reid stage that
    is not in the cache from its record of the same key, so a table can be assembled from runs made on
    several machines (a changed param, input or version has another key and finds no record)."""
    from reidaug.pipeline.cache import Cache
    from reidaug.pipeline.records import describe, find_record, kinds_or_default, save_record
    from reidaug.stages import STAGES

    loaded, graph = _load(pipeline, sets)
    cache = Cache(_workspace(loaded, workspace))
    wanted = kinds_or_default(kinds)
    unknown = [k for k in wanted if k not in STAGES]
    if unknown:
        raise ConfigError(f"--kind {', '.join(unknown)}: not a stage kind. Known: {', '.join(sorted(STAGES))}")
    Path(dest).mkdir(parents=True, exist_ok=True)  # compare --records needs the folder, even while empty
    written = unchanged = differ = earlier = missing = 0
    for name, node in graph.nodes.items():
        kind = node.spec.name
        if kind not in wanted:
            continue
        key = graph.keys[name]
        if cache.state(kind, key).status != "cached":
            if find_record(dest, kind, key) is not None:
                earlier += 1  # finished on another machine (or before a cache gc)
            else:
                missing += 1
            continue
        saved = save_record(cache.entry_dir(kind, key), dest, kind, key, stage=name, pipeline=str(loaded.path),
                            max_bytes=max_file_kb << 10)
        if saved.status == "written":
            written += 1
            click.echo(f"{name} ({key[:12]}): {describe(saved)} -> {saved.path}")
        elif saved.status == "differs":
            differ += 1
            click.echo(f"warning: {name} ({key[:12]}): this cache's {', '.join(saved.differs)} differ from the "
                       f"record in {saved.path}, made by another run of the same key (kept as it is). The stage "
                       "is not deterministic across these machines, or the record was edited: compare the two; "
                       "delete the record to keep this run's instead", err=True)
        else:
            unchanged += 1
    click.echo(f"records in {dest}: {written} written, {unchanged} unchanged, {differ} differ, {earlier} recorded "
               f"earlier (not in this cache), {missing} stages neither finished nor recorded")
    if strict and differ:
        raise click.exceptions.Exit(1)


@main.command()
@click.argument("source")
@click.option("--workspace", "-w", type=click.Path(file_okay=False), help="Workspace of the pipeline YAML.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="The same overrides the run used.")
@click.option("--output", "-o", type=click.Path(dir_okay=False),
              help="Where to write it [default: WORKSPACE/report.html].")
def report(source, workspace, sets, output):
    """One self-contained HTML page of a pipeline's results: the stage graph with each stage's state, key,
    time and size; dataset summary and quarantine; pose overlays and canonical poses; each GAN's loss
    curves and samples; real-vs-fake grids per set; generation scores; re-ID metrics, curves and CMC.

    SOURCE: a pipeline YAML (its stages as they resolve now), or a workspace folder (its latest run).
    Reads the cache only: nothing is run, and stages not run yet are shown as such."""
    from reidaug.report import report_pipeline, report_workspace

    src = Path(source)
    if src.is_dir() and not source.endswith((".yaml", ".yml")):
        if sets:
            raise ConfigError("--set applies to a pipeline YAML; a workspace is reported as its latest run ran.")
        path = report_workspace(src.resolve(), output)
    else:
        loaded, graph = _load(source, sets)
        path = report_pipeline(graph, _workspace(loaded, workspace), output)
    click.echo(f"report: {path}")


@main.command("demo-data")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--num-ids", default=24, show_default=True, type=click.IntRange(2, 9999))
@click.option("--num-cams", default=2, show_default=True, type=click.IntRange(2, 6))
@click.option("--images-per-id-per-cam", default=4, show_default=True, type=click.IntRange(2, 1000))
@click.option("--height", default=128, show_default=True, type=click.IntRange(32, 1024))
@click.option("--width", default=64, show_default=True, type=click.IntRange(16, 1024))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0))
def demo_data(out_dir, num_ids, num_cams, images_per_id_per_cam, height, width, seed):
    """Write the synthetic demo dataset (Market-1501 layout) to OUT_DIR, outside any pipeline."""
    from reidaug.data.synthetic import SyntheticSpec, write_dataset

    spec = SyntheticSpec(num_ids=num_ids, num_cams=num_cams, images_per_id_per_cam=images_per_id_per_cam,
                         height=height, width=width, seed=seed)
    s = write_dataset(Path(out_dir), spec)
    click.echo(f"{'unchanged' if s.skipped else 'wrote'} {s.out_dir}: {s.num_train} train / {s.num_query} query / "
               f"{s.num_gallery} gallery images, {s.num_gt_camstyle} camera-style ground-truth images, keypoints.json")


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--verify", "do_verify", is_flag=True, help="Check every dataset's checksum and the format's invariants.")
@click.option("--grid", "grid_png", type=click.Path(dir_okay=False),
              help="Write a picture of samples by source and camera "
                   "(and, with fakes, NAME_fakes.png: origins and their fakes).")
@click.option("--poses", "poses_png", type=click.Path(dir_okay=False), help="Write skeleton overlays on 16 crops.")
@click.option("--split", default="train", show_default=True, help="Split for --grid, --poses and --compare-png.")
@click.option("--per-cell", default=3, show_default=True, type=click.IntRange(1, 20),
              help="Images per source x camera cell.")
@click.option("--compare", "compare", multiple=True, metavar="LABEL=FILE",
              help="With --compare-png: a column of FILE's fakes of FILE's real images (matched by path), "
                   "e.g. --compare CycleGAN=a.h5 --compare PTGAN=b.h5. Repeat for more columns.")
@click.option("--compare-png", type=click.Path(dir_okay=False),
              help="Write 8 real images of FILE, each beside its fake in every --compare file.")
def inspect(file, do_verify, grid_png, poses_png, split, per_cell, compare, compare_png):
    """Summary of a reidaug HDF5 file (splits, ids, images, cameras, sources, label schemes, sizes)."""
    from reidaug.data.inspect import compare_fakes_grid, fakes_grid, grid, pose_grid, summary, verify

    path = Path(file)
    if not path.is_file():
        raise ConfigError(f"no such file: {path}. Give the path of an HDF5 file written by export-hdf5.")
    if bool(compare) != bool(compare_png):  # before any output: a half-given comparison is a typo
        raise ConfigError("--compare and --compare-png go together: --compare LABEL=FILE (one or more) names the "
                          "files, --compare-png PATH the picture. Fix: give both, or neither.")
    columns: dict[str, Path] = {}
    for item in compare:
        label, sep, other = item.partition("=")
        if not sep or not label or not other:
            raise ConfigError(f"--compare {item!r}: expected LABEL=FILE (e.g. PTGAN=export-ptgan.h5).")
        if label in columns:
            raise ConfigError(f"--compare: the label {label!r} is given twice; each column needs its own label.")
        if not Path(other).is_file():
            raise ConfigError(f"--compare {item!r}: no such file: {other}. Give an HDF5 file written by export-hdf5.")
        columns[label] = Path(other)
    click.echo(summary(path))
    if do_verify:
        problems = verify(path)
        if problems:
            for p in problems:
                click.echo(f"  PROBLEM {p}", err=True)
            raise DataError(f"{path}: {len(problems)} problem(s) found by --verify (listed above)")
        click.echo("verify: every checksum and invariant holds")
    if grid_png:
        out = grid(path, grid_png, split=split, per_cell=per_cell)
        click.echo(f"wrote {out}")
        fakes_png = out.with_name(f"{out.stem}_fakes{out.suffix}")
        if fakes_grid(path, fakes_png, split=split) is not None:
            click.echo(f"wrote {fakes_png} (real images, each followed by its fakes)")
    if poses_png:
        out = pose_grid(path, poses_png, split=split)
        click.echo(f"wrote {out}")
    if compare_png:
        out = compare_fakes_grid(path, columns, compare_png, split=split)
        click.echo(f"wrote {out} (real images of {path.name}, each beside its fake in {', '.join(columns)})")


@main.command("score-fakes")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--judge", "judge", type=click.Path(dir_okay=False),
              help="ONNX re-ID model judging identity (e.g. ../shared/models/osnet_x0_25_msmt17.onnx); "
                   "without it, SSIM only.")
@click.option("--synthetic-root", type=click.Path(file_okay=False),
              help="The demo-data folder the file was made from: SSIM against the true image of each fake.")
@click.option("--source", "sources", multiple=True, help="Score only fakes of this source (repeatable).")
@click.option("--target", "target", type=click.Path(dir_okay=False),
              help="An export of the dataset the fakes were translated into (PTGAN / SPGAN): FReID to its real "
                   "train images beside the untranslated origins'. Needs --judge.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Write metrics.json and metrics.md here.")
def score_fakes_command(file, judge, synthetic_root, sources, target, out_dir):
    """Score the fakes of an exported HDF5 file: identity consistency (external judge), FReID, SSIM."""
    from reidaug.eval.generation import score_generated_file
    from reidaug.io.atomic import write_json, write_text

    path = Path(file)
    if not path.is_file():
        raise ConfigError(f"no such file: {path}. Give the path of an HDF5 file written by export-hdf5.")
    if judge is not None and not Path(judge).is_file():
        raise ConfigError(f"--judge {judge}: no such file. Give an ONNX re-ID model, e.g. torchreid's osnet_x0_25 "
                          "exported to ONNX (../shared/models/osnet_x0_25_msmt17.onnx in this workplace).")
    if target is not None and not Path(target).is_file():
        raise ConfigError(f"--target {target}: no such file. Give an HDF5 export of the target dataset.")
    result = score_generated_file(path, judge, synthetic_root=synthetic_root, sources=list(sources) or None,
                                  target=target)
    click.echo(result["report"].rstrip("\n"))
    if out_dir:
        out = Path(out_dir)
        write_json(out / "metrics.json", {k: v for k, v in result.items() if k != "report"})
        write_text(out / "metrics.md", result["report"])
        click.echo(f"wrote {out / 'metrics.json'} and {out / 'metrics.md'}")


@main.command("export-poses")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("out_csv", type=click.Path(dir_okay=False))
@click.option("--split", default="train", show_default=True)
@click.option("--threshold", default=0.3, show_default=True, type=click.FloatRange(0, 1),
              help="Keypoints at or below this score are written as missing (-1).")
def export_poses(file, out_csv, split, threshold):
    """Write an HDF5 file's keypoints as an OpenPose-18 annotation CSV (name:keypoints_y:keypoints_x),
    in each image's original pixel frame, for Deformable GAN / PATN / GFLA / DPTN."""
    import numpy as np

    from reidaug.data.h5format import open_h5
    from reidaug.pose.keypoints import rescale_keypoints, unletterbox_keypoints
    from reidaug.pose.openpose import write_openpose_csv

    path = Path(file)
    if not path.is_file():
        raise ConfigError(f"no such file: {path}. Give the path of an HDF5 file written by export-hdf5.")
    with open_h5(path) as f:
        m = f.meta(split)
        if m.keypoints is None:
            raise DataError(f"{path}: split {split!r} has no keypoints; export them with an extract-pose stage first")
        stored_hw, padded = f.info.image_size, f.info.image_resize == "pad"
        mapping = {}
        for i in range(len(m)):
            if m.source_name(i) != "real":
                continue
            kp = np.nan_to_num(m.keypoints[i]).copy()
            if stored_hw is not None:  # back to the original image's frame (the annotations' convention)
                native = tuple(int(v) for v in m.native_hw[i])
                kp = (unletterbox_keypoints(kp[None], [native], stored_hw)[0] if padded
                      else rescale_keypoints(kp, stored_hw, native))  # the inverse of the writer's rule
            name = m.path[i].rsplit("/", 1)[-1]
            if name in mapping:
                raise DataError(f"{path}: two {split} images are named {name}; the CSV format keys by file name")
            mapping[name] = kp
    write_openpose_csv(out_csv, mapping, threshold=threshold)
    click.echo(f"wrote {out_csv}: {len(mapping)} {split} images")


@main.group()
def cache():
    """Inspect and clean the stage cache."""


@cache.command("ls")
@click.option("--workspace", "-w", type=click.Path(file_okay=False), default=None,
              help="Workspace folder (default: every folder under ./workspace).")
def cache_ls(workspace):
    """List cache entries: stage, key, kind, size, created."""
    from reidaug.pipeline.cache import Cache, dir_size

    rows = [("workspace", "stage", "key", "kind", "size", "created")]
    for ws in _workspaces(workspace):
        for stage_name, key, path, kind in Cache(ws).iter_entries():
            created = ""
            if kind == "cached":
                try:
                    created = json.loads((path / "meta.json").read_text()).get("created", "")
                except (OSError, ValueError):
                    kind = "corrupt"
            rows.append((str(ws), stage_name, key[:12], kind, _human(dir_size(path)), created))
    if len(rows) == 1:
        click.echo("cache is empty")
        return
    _table(rows)


@cache.command("gc")
@click.option("--workspace", "-w", type=click.Path(file_okay=False), required=True)
@click.option("-c", "--config", "pipelines", multiple=True,
              help="Keep what these pipelines refer to (default: the latest key of every stage that ran here).")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def cache_gc(workspace, pipelines, dry_run):
    """Remove cache entries that no pipeline refers to."""
    from reidaug.pipeline.cache import Cache, dir_size
    from reidaug.pipeline.lock import WorkspaceLock

    ws = Path(workspace)
    if not (ws / "cache").is_dir():
        raise ConfigError(f"{ws} is not a reidaug workspace (no cache/ folder in it)")
    keep: set[str] = set()
    if pipelines:
        for p in pipelines:
            _loaded, graph = _load(p, ())
            keep.update(graph.keys.values())
    else:
        for f in sorted((ws / "state").glob("*.json")):
            try:
                keep.add(json.loads(f.read_text())["key"])
            except (OSError, ValueError, KeyError):
                log.warning("unreadable state record %s ignored", f)
    removed = freed = 0
    lock = WorkspaceLock(ws)
    lock.acquire()  # never remove a partial entry that a running reidaug is filling
    cache = Cache(ws)
    finished = {(s, k) for s, k, _p, kind in cache.iter_entries() if kind == "cached"}
    for stage_name, key, path, kind in cache.iter_entries():
        # keep referenced entries; a partial one only while it has no finished twin
        if key in keep and (kind == "cached" or (kind == "partial" and (stage_name, key) not in finished)):
            continue
        size = dir_size(path)
        click.echo(f"{'would remove' if dry_run else 'removing'} {stage_name} {key[:12]} ({kind}, {_human(size)})")
        if not dry_run:
            shutil.rmtree(path)
        removed += 1
        freed += size
    lock.release()
    click.echo(f"{'would free' if dry_run else 'freed'} {_human(freed)} in {removed} entries; kept {len(keep)} keys")


@cache.command("verify")
@click.option("--workspace", "-w", type=click.Path(file_okay=False), required=True)
@click.option("--repair", is_flag=True, help="Reopen damaged entries so the next run recomputes their damaged chunks.")
def cache_verify(workspace, repair):
    """Check every finished entry's chunk files against the sizes and sha256 in its meta.json.

    Exit status 1 when anything is damaged. A run checks sizes on its own before it skips a stage;
    this also reads every byte.
    """
    from reidaug.pipeline.cache import Cache, damaged_chunks
    from reidaug.pipeline.lock import WorkspaceLock

    ws = Path(workspace)
    if not (ws / "cache").is_dir():
        raise ConfigError(f"{ws} is not a reidaug workspace (no cache/ folder in it)")
    cache, checked, bad_entries = Cache(ws), 0, 0
    with WorkspaceLock(ws):  # a running reidaug commits entries: check a still cache
        for stage_name, key, path, kind in list(cache.iter_entries()):
            meta = cache.load_meta(stage_name, key) if kind == "cached" else None
            if meta is None:
                continue
            checked += 1
            bad = damaged_chunks(path, meta, full=True)
            if not bad:
                continue
            bad_entries += 1
            for name, why in sorted(bad.items()):
                click.echo(f"{stage_name} {key[:12]}: chunks/{name}: {why}")
            if repair:
                cache.reopen(stage_name, key, sorted(bad), int(meta["num_chunks"]))
                click.echo(f"{stage_name} {key[:12]}: reopened; the next `reidaug run` recomputes "
                           f"{len(bad)} chunk(s)")
    click.echo(f"checked {checked} entries: {bad_entries} damaged")
    if bad_entries:
        raise SystemExit(1)


def _workspaces(workspace: str | None) -> list[Path]:
    if workspace:
        return [Path(workspace)]
    base = Path("workspace")
    return sorted(p for p in base.iterdir() if (p / "cache").is_dir()) if base.is_dir() else []


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def _table(rows) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for n, r in enumerate(rows):
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))


# -- training and evaluation: reidaug/cli_train.py (torch is imported only when they run) -----------
from reidaug.cli_train import evaluate_command, train_command  # noqa: E402

main.add_command(train_command)
main.add_command(evaluate_command)


if __name__ == "__main__":  # pragma: no cover
    main()
