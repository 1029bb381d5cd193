"""The fault suite's machinery, shared by ``tests/faults/`` and ``bench/faults.py``: real
``reidaug run`` subprocesses killed at chosen points (``REIDAUG_FAULT``, :mod:`reidaug.io.faults`),
the bytes that must come out the same, and the mutations of ``configs/demo.yaml`` the config
fuzzer feeds to the loader."""
from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs" / "demo.yaml"

#: the demo pipeline with budgets small enough to run a dozen times, and several chunks and
#: checkpoints per stage so that a kill lands between two of them
SMALL = {
    "execution.workers": "1",  # one chunk at a time: "the Nth chunk" is the same chunk in every run
    "stages.demo-data.params.num_ids": "12",
    "stages.ingest.params.chunk_size": "24",
    "stages.extract-pose.params.batch_size": "16",
    "stages.train-camstyle.params.iterations": "12",
    "stages.train-camstyle.params.checkpoint_every": "4",
    "stages.train-camstyle.params.sample_every": "12",
    "stages.train-camstyle.params.log_every": "3",
    "stages.train-posegan.params.iterations": "12",
    "stages.train-posegan.params.checkpoint_every": "4",
    "stages.train-posegan.params.sample_every": "12",
    "stages.train-posegan.params.log_every": "3",
    "stages.score-posegan.params.num_pairs": "20",
    "stages.train-reid.params.epochs": "2",
    "stages.train-reid.params.checkpoint_unit": "step",
    "stages.train-reid.params.checkpoint_every": "2",
}

#: where the kill-point run is killed, in the order the stages run: every stage kind of the demo,
#: training stages between two checkpoints (each kill is a fresh process, so counts restart)
KILL_POINTS = [
    "kill:chunk:demo-data:1",               # after its only chunk, before the entry is committed
    "kill:chunk:ingest:2",
    "kill:chunk:extract-pose:1",
    "kill:chunk:cluster-poses:1",
    "kill:checkpoint:train-camstyle*:2",    # mid-GAN training: step 8 of 12
    "kill:chunk:generate-camstyle:1",
    "kill:checkpoint:train-posegan*:1",     # mid-PG2 (G1 phase)
    "kill:checkpoint:train-posegan*:2",     # again, later, from a resumed run
    "kill:chunk:generate-poseguided:2",
    "kill:chunk:score-posegan:1",
    "kill:chunk:assign-labels:3",
    "kill:chunk:export-hdf5:1",
    "kill:checkpoint:train-reid:1",         # mid re-ID training
]


def set_args(overrides: dict[str, str]) -> list[str]:
    return [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]


def reidaug_run(ws: Path, fault: str | None = None, extra: list[str] | None = None,
                timeout: float = 1800) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("REIDAUG_FAULT", None)
    if fault:
        env["REIDAUG_FAULT"] = fault
    cmd = [sys.executable, "-m", "reidaug.cli", "run", str(DEMO), "-w", str(ws), *set_args(SMALL), *(extra or [])]
    ws.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.run(cmd, cwd=ws.parent, env=env, capture_output=True, text=True, timeout=timeout)


def result_bytes(ws: Path) -> dict[str, bytes]:
    """What must be byte-identical after any kill: every chunk file, the export and every
    generator / model file, by stage and file (keys are the same in both workspaces)."""
    out = {}
    for f in sorted((ws / "cache").rglob("*")):
        rel = f.relative_to(ws / "cache").as_posix()
        if not f.is_file() or any(tag in rel for tag in (".partial", ".corrupt-", ".old-")):
            continue  # finished entries only (a damaged one set aside as .corrupt-N is not a result)
        if "/chunks/" in rel or f.name == "dataset.h5" or "/models/" in rel or rel.endswith("run/model.pt"):
            out[rel] = f.read_bytes()
    return out


def is_traceback(text: str) -> bool:
    return "Traceback (most recent call last)" in text


@dataclass
class KillReport:
    points: list[dict] = field(default_factory=list)
    final_rc: int | None = None
    identical: bool = False
    differing: list[str] = field(default_factory=list)
    tracebacks: int = 0
    seconds: float = 0.0


def kill_point_run(tmp: Path, points: list[str] = KILL_POINTS) -> KillReport:
    """A clean run, then one workspace killed at every point in turn, resumed to the end: the
    result bytes of both must be equal."""
    t0 = time.perf_counter()
    rep = KillReport()
    clean = tmp / "clean"
    done = reidaug_run(clean)
    if done.returncode != 0:
        raise AssertionError(f"the clean run failed: {done.stderr[-3000:]}")
    ws = tmp / "killed"
    for point in points:
        r = reidaug_run(ws, point)
        rep.tracebacks += is_traceback(r.stderr)
        rep.points.append({"fault": point, "rc": r.returncode, "killed": r.returncode == -signal.SIGKILL,
                           "resumed": "resuming" in r.stderr or "resume" in r.stderr})
    final = reidaug_run(ws)
    rep.final_rc = final.returncode
    rep.tracebacks += is_traceback(final.stderr)
    a, b = result_bytes(clean), result_bytes(ws)
    rep.differing = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    rep.identical = not rep.differing and bool(a)
    rep.seconds = time.perf_counter() - t0
    return rep


# -- config mutations --------------------------------------------------------------------------
@dataclass(frozen=True)
class Mutation:
    kind: str
    text: bytes
    invalid: bool  # True: the loader must refuse it; False: either answer is fine (it may be valid)
    what: str = ""  # the changed line, for the report


_NUMBER = re.compile(r"^(\s+)([a-z_]+): (-?\d+(?:\.\d+)?)(\s*(#.*)?)$")
_KEYLINE = re.compile(r"^(\s+)([a-z_][a-z_0-9-]*):(.*)$")


def mutations(n: int, seed: int = 0) -> list[Mutation]:
    """``n`` seeded mutations of configs/demo.yaml, cycling through the kinds the issue names:
    delete / retype / out-of-range / unknown names / dangling references / cycles / syntax errors
    / encodings / size bombs."""
    base = DEMO.read_text()
    lines = base.splitlines()
    rng = random.Random(seed)
    number_lines = [i for i, x in enumerate(lines) if _NUMBER.match(x)]
    key_lines = [i for i, x in enumerate(lines) if _KEYLINE.match(x) and not x.strip().startswith("#")]
    input_lines = [i for i, x in enumerate(lines) if re.match(r"^\s+[a-z_]+: [a-z-]+\.[a-z_]+\s*(#.*)?$", x)]

    def join(ls: list[str]) -> bytes:
        return ("\n".join(ls) + "\n").encode()

    def edit(i: int, new: str) -> bytes:
        ls = list(lines)
        ls[i] = new
        return join(ls)

    def delete_key() -> Mutation:
        i = rng.choice(key_lines)
        ls = list(lines)
        del ls[i]
        return Mutation("delete", join(ls), False)  # deleting an optional key may well be valid

    def retype() -> Mutation:
        i = rng.choice(number_lines)
        m = _NUMBER.match(lines[i])
        value = rng.choice(["true", "false", "'ten'", "[1, 2]", "{a: 1}", "null", "1e400", ".nan"])
        # null may be a valid "unset" and a list may be valid for list params: only sure kinds are invalid
        invalid = value in ("true", "false", "'ten'", "{a: 1}", ".nan", "1e400")
        return Mutation("retype", edit(i, f"{m.group(1)}{m.group(2)}: {value}"), invalid, f"{m.group(2)}: {value}")

    def out_of_range() -> Mutation:
        i = rng.choice(number_lines)
        m = _NUMBER.match(lines[i])
        value = rng.choice(["-1", "0", "-0.5", "100000000000000000000000000", "1e30"])
        # 0 or a negative is allowed for some fields (warmup, epsilon, seed 0): only huge is sure
        invalid = value in ("100000000000000000000000000", "1e30") and m.group(2) not in ("lr",)
        return Mutation("out-of-range", edit(i, f"{m.group(1)}{m.group(2)}: {value}"), invalid,
                        f"{m.group(2)}: {value}")

    def unknown_name() -> Mutation:
        i = rng.choice(key_lines)
        m = _KEYLINE.match(lines[i])
        typo = m.group(2) + rng.choice(["x", "_", "s"]) if len(m.group(2)) > 1 else "zz"
        return Mutation("unknown-name", edit(i, f"{m.group(1)}{typo}:{m.group(3)}"), True, f"line {i + 1}: {typo}")

    def unknown_stage() -> Mutation:
        text = base.replace("stages:\n", "stages:\n  extra:\n    uses: generate-camstlye\n", 1)
        return Mutation("unknown-stage", text.encode(), True)

    def dangling() -> Mutation:
        i = rng.choice(input_lines)
        key, ref = lines[i].split(":", 1)
        stage, _, out = ref.split("#")[0].strip().partition(".")
        new = rng.choice([f"{stage}x.{out}", f"{stage}.{out}x", f"{stage}"])
        return Mutation("dangling-ref", edit(i, f"{key}: {new}"), True, f"line {i + 1}: {key.strip()}: {new}")

    def cycle() -> Mutation:
        text = base + "  loop-a:\n    uses: assign-labels\n    inputs: {dataset: loop-b.labels}\n" \
                      "  loop-b:\n    uses: assign-labels\n    inputs: {dataset: loop-a.labels}\n"
        return Mutation("cycle", text.encode(), True)

    def syntax() -> Mutation:
        i = rng.randrange(len(lines))
        choice = rng.randrange(5)
        line = lines[i]
        if choice == 0:
            new = line + ' "'
        elif choice == 1:
            new = line.replace(":", "", 1) + " [" if ":" in line else line + " {"
        elif choice == 2:
            new = "\t" + line
        elif choice == 3:
            new = line + " ]"
        else:
            new = "  " * rng.randint(1, 6) + line.lstrip() + ": :"
        text = edit(i, new)
        # a stray quote or tab inside a comment is harmless, so only a structural break is sure
        return Mutation("syntax", text, False)

    def encoding() -> Mutation:
        choice = rng.randrange(4)
        if choice == 0:
            return Mutation("encoding", base.encode("utf-16"), True)
        if choice == 1:
            i = rng.randrange(len(lines))
            return Mutation("encoding", edit(i, lines[i]).replace(lines[i].encode(), lines[i].encode() + b"\xe9\xff"),
                            True)
        if choice == 2:
            return Mutation("encoding", b"\x00" + base.encode(), True)
        return Mutation("encoding", base.encode()[: rng.randrange(10, len(base))] + b"\x80\x81", True)

    def bomb() -> Mutation:
        choice = rng.randrange(3)
        if choice == 0:
            text = 'a: &a ["x","x","x","x","x","x","x","x"]\n' + "".join(
                f'{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n' for p, c in zip("abcdefgh", "bcdefghi"))
            return Mutation("size-bomb", (text + "name: x\nstages: {}\n").encode(), True)
        if choice == 1:
            return Mutation("size-bomb", ("name: t\nstages: " + "[" * 5000 + "]" * 5000 + "\n").encode(), True)
        return Mutation("size-bomb", ("name: t\nstages: {}\n" + "# pad\n" * 300_000).encode(), True)

    kinds = [delete_key, retype, out_of_range, unknown_name, unknown_stage, dangling, cycle, syntax, encoding, bomb]
    return [kinds[i % len(kinds)]() for i in range(n)]


@dataclass
class FuzzResult:
    tried: int = 0
    accepted_valid: int = 0
    refused: int = 0
    invalid_accepted: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)  # anything but a ReidAugError: a traceback to the user
    slowest_s: float = 0.0
    peak_mb: float = 0.0
    by_kind: dict[str, int] = field(default_factory=dict)


def fuzz_loader(tmp: Path, muts: list[Mutation]) -> FuzzResult:
    """Load and plan each mutation in-process as `reidaug run --dry-run` does (load, build the
    graph, key every stage), recording what escapes as anything other than a ReidAugError."""
    import tracemalloc

    from reidaug.errors import ReidAugError
    from reidaug.pipeline.config import load_pipeline
    from reidaug.pipeline.graph import build_graph
    from reidaug.stages import STAGES

    res = FuzzResult()
    path = tmp / "demo.yaml"
    for m in muts:
        path.write_bytes(m.text)
        res.tried += 1
        res.by_kind[m.kind] = res.by_kind.get(m.kind, 0) + 1
        t0 = time.perf_counter()
        tracemalloc.start()
        try:
            build_graph(load_pipeline(path), STAGES)
            ok = True
        except ReidAugError:
            ok = False
        except Exception as e:  # noqa: BLE001 - the point: nothing else may escape
            ok = False
            res.crashes.append(f"{m.kind}: {type(e).__name__}: {str(e)[:200]}")
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        res.slowest_s = max(res.slowest_s, time.perf_counter() - t0)
        res.peak_mb = max(res.peak_mb, peak / 2**20)
        if ok:
            res.accepted_valid += 1
            if m.invalid:
                res.invalid_accepted.append(f"{m.kind}: {m.what}")
        else:
            res.refused += 1
    return res
