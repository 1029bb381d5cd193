"""The fault suite's long run (issue 14): every kill point, the config fuzzer at >= 1,000
mutations, a sample of invalid pipelines through the real CLI, and the damage / full-disk /
concurrency tests of ``tests/faults``; one table in ``bench/results/faults.json``.

    python bench/faults.py [--mutations 1200] [--cli-sample 40] [--out bench/results/faults.json]

Takes ~10 minutes on 2 cores. The quick subset runs in ``make test``; all of it in ``make test-all``.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, RESULTS, command_line, cpu_model, load_average, machine, now_utc, write_result

sys.path.insert(0, str(ROOT / "tests" / "faults"))
import faultlib  # noqa: E402


def cli_sample(tmp: Path, n: int, seed: int) -> dict:
    """Surely-invalid mutations through ``reidaug run --dry-run`` as a user meets them."""
    muts = [m for m in faultlib.mutations(10 * n, seed=seed) if m.invalid][:n]
    exit0, tracebacks, not_one_line = [], [], []
    for i, m in enumerate(muts):
        path = tmp / f"m{i}.yaml"
        path.write_bytes(m.text)
        r = subprocess.run([sys.executable, "-m", "reidaug.cli", "run", str(path), "--dry-run", "-w", str(tmp / "w")],
                           capture_output=True, text=True)
        if r.returncode == 0:
            exit0.append(f"{m.kind}: {m.what}")
        if "Traceback" in r.stderr:
            tracebacks.append(f"{m.kind}: {r.stderr[-300:]}")
        if sum(x.startswith("Error:") for x in r.stderr.splitlines()) != 1:
            not_one_line.append(f"{m.kind}: {r.stderr[-300:]}")
    return {"tried": len(muts), "exit_0_on_invalid": exit0, "tracebacks": tracebacks,
            "not_one_error_line": not_one_line}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mutations", type=int, default=1200)
    ap.add_argument("--cli-sample", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "faults.json"))
    args = ap.parse_args()
    doc = {"date": now_utc(), "command": command_line(), "machine": machine(cpu=cpu_model()),
           "load_average_start": load_average()}
    with tempfile.TemporaryDirectory(prefix="reidaug-faults-") as tmp_:
        tmp = Path(tmp_)
        t0 = time.perf_counter()
        rep = faultlib.kill_point_run(tmp / "kills")
        doc["kill_points"] = {"points": rep.points, "final_rc": rep.final_rc, "identical": rep.identical,
                              "differing": rep.differing, "tracebacks": rep.tracebacks,
                              "seconds": round(rep.seconds, 1)}
        print(f"kill points: {sum(p['killed'] for p in rep.points)}/{len(rep.points)} killed, resumed to rc "
              f"{rep.final_rc}, bytes identical: {rep.identical}, tracebacks: {rep.tracebacks}")
        (tmp / "fuzz").mkdir()
        fz = faultlib.fuzz_loader(tmp / "fuzz", faultlib.mutations(args.mutations, seed=args.seed))
        doc["config_fuzzer"] = {"tried": fz.tried, "accepted": fz.accepted_valid, "refused": fz.refused,
                                "crashes": fz.crashes, "invalid_accepted": fz.invalid_accepted,
                                "slowest_s": round(fz.slowest_s, 3), "peak_mb": round(fz.peak_mb, 1),
                                "by_kind": fz.by_kind}
        print(f"config fuzzer: {fz.tried} mutations, {fz.refused} refused, {fz.accepted_valid} accepted, "
              f"{len(fz.crashes)} crashes, {len(fz.invalid_accepted)} invalid accepted, slowest {fz.slowest_s:.2f} s, "
              f"peak {fz.peak_mb:.0f} MB")
        (tmp / "cli").mkdir()
        doc["cli_sample"] = cli_sample(tmp / "cli", args.cli_sample, args.seed + 1)
        c = doc["cli_sample"]
        print(f"CLI sample: {c['tried']} invalid pipelines, {len(c['exit_0_on_invalid'])} exit 0, "
              f"{len(c['tracebacks'])} tracebacks, {len(c['not_one_error_line'])} without exactly one Error line")
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "", "-k",
                            "garbled or damaged or full_disk or busy", str(ROOT / "tests" / "faults")],
                           capture_output=True, text=True, cwd=ROOT)
        doc["damage_tests"] = {"rc": r.returncode, "summary": r.stdout.strip().splitlines()[-1:]}
        print("damage / full disk / concurrency tests:", doc["damage_tests"]["summary"])
        doc["seconds"] = round(time.perf_counter() - t0, 1)
    doc["load_average_end"] = load_average()
    write_result(args.out, doc)


if __name__ == "__main__":
    main()
