"""bench/seed_systems.sh, the real-data runs behind BENCHMARKS' seed-system tables: a name it does not know
is refused with the list before anything runs, and its dry mode shows what is left of a run."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def script(*args: str, **env: str) -> subprocess.CompletedProcess:
    if not (ROOT / ".venv" / "bin" / "reidaug").exists():
        pytest.skip("the script runs the project's .venv (scripts/setup.sh makes it)")
    return subprocess.run(["bash", "bench/seed_systems.sh", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env}, timeout=300)


def test_an_unknown_run_is_refused_before_anything_runs():
    proc = script("fusion", "transfr", DRY="1")
    assert proc.returncode == 2
    assert "unknown run 'transfr'" in proc.stderr and all(n in proc.stderr for n in ("fusion", "transfer", "dgnet"))
    assert "==" not in proc.stdout  # fusion, named first, did not start


def test_the_dry_mode_shows_each_runs_stages_and_workspace(shared_dir):
    proc = script("fusion", DRY="1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "configs/real/cuhk01_posegan.yaml" in proc.stdout
    rows = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    assert {"train-posegan", "reid-real", "evaluate-posefusion", "workspace:"} <= rows


STUB = """#!/usr/bin/env bash
# stands in for the reidaug CLI: records its calls; status prints a table like the real one (whole keys with
# --full-keys, else their first 12 characters)
echo "$*" >> "$CALLS"
k() { if [[ "$ARGS" == *--full-keys* ]]; then echo "$1"; else echo "${1:0:12}"; fi; }
ARGS="$*"
case "$1" in
  status) printf 'stage                key           state\\n' ;
          printf 'evaluate-posefusion  %s  %s\\n' "$(k "$KEY")" "$STATE" ;
          printf 'evaluate-pnfusion    %s  cached\\n' "$(k "$KEY2")" ;
          i=0; for n in cyclegan ptgan spgan; do
            printf 'score-%s  %s  %s\\n' "$n" "$(k "$SCOREKEY$i$SCORETAIL")" "$SCORESTATE"; i=$((i+1)); done ;
          printf 'syn-raw-s0  %s  missing\\n' "$(k "$RAWKEY")" ;
          printf 'workspace: %s\\n' "$WS" ;;
  compare) if [[ "$*" == *--format\\ json* ]]; then out=${@: -1}; echo '{"runs": []}' > "$out"; fi ;;
esac
"""


@pytest.fixture
def stub(tmp_path):
    cli = tmp_path / "reidaug"
    cli.write_text(STUB)
    cli.chmod(0o755)
    ws = tmp_path / "my workspace"  # a space in the path
    key = "3914f4aeac54" + "0" * 52
    entry = ws / "cache" / "evaluate-posefusion" / key[:2] / key
    entry.mkdir(parents=True)
    (entry / "meta.json").write_text("{}")
    (entry / "metrics.json").write_text('{"fusions": {}}')
    (entry / "metrics.md").write_text("| feature | rank-1 (%) |\n")
    stale = entry.with_name(entry.name + ".partial")  # a partial entry of the same key is never the result
    stale.mkdir()
    (stale / "meta.json").write_text("{}")
    key2 = "d113e0dbfd2d" + "1" * 52  # evaluate-pnfusion: an evaluate-posefusion entry under another name
    pn = ws / "cache" / "evaluate-posefusion" / key2[:2] / key2
    pn.mkdir(parents=True)
    (pn / "meta.json").write_text("{}")
    (pn / "metrics.json").write_text('{"pose_model": true}')
    (pn / "metrics.md").write_text("| [original ; max over 8 poses, pose model] (PN-GAN) |\n")
    score_key = "bf116f26194"  # + the stage's index: score-cyclegan, score-ptgan, score-spgan
    for i in range(3):
        score = ws / "cache" / "score-fakes" / score_key[:2] / (f"{score_key}{i}" + "2" * 52)
        score.mkdir(parents=True)
        (score / "meta.json").write_text("{}")
        (score / "metrics.json").write_text(f'{{"freid_target": {{"fd": {i}}}}}')
        (score / "metrics.md").write_text(f"| FReID vs the target dataset (lower is better) | {i} |\n")
    results = tmp_path / "results"
    results.mkdir()
    env = {"REIDAUG": str(cli), "CALLS": str(tmp_path / "calls"), "KEY": key, "KEY2": key2, "SCOREKEY": score_key,
           "STATE": "cached", "WS": str(ws), "RESULTS": str(results), "RECORDS": str(tmp_path / "records"),
           "SCORETAIL": "2" * 52, "SCORESTATE": "cached", "RAWKEY": "5" * 64}
    return env, entry, results


def test_fusion_copies_the_finished_entrys_metrics_and_the_others_write_their_compare_table(stub):
    env, entry, results = stub
    proc = script("fusion", "transfer", **env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (results / "posefusion_cuhk01.json").read_text() == '{"fusions": {}}'
    assert "| feature | rank-1 (%) |" in proc.stdout
    assert (results / "transfer_cuhk01.json").read_text().strip() == '{"runs": []}'
    # the three score stages' metrics, one JSON object keyed by stage
    scores = json.loads((results / "transfer_scores_cuhk01.json").read_text())
    names = ("cyclegan", "ptgan", "spgan")
    assert scores == {f"score-{n}": {"freid_target": {"fd": i}} for i, n in enumerate(names)}
    assert "-- score-spgan" in proc.stdout and "FReID vs the target dataset" in proc.stdout
    calls = Path(env["CALLS"]).read_text().splitlines()
    assert calls[0] == "run configs/real/cuhk01_posegan.yaml --until evaluate-posefusion"
    assert "run configs/real/synthetic_to_cuhk01.yaml" in calls
    assert any(c.startswith("compare configs/real/synthetic_to_cuhk01.yaml --records ") and " -b syn-raw" in c
               for c in calls)
    assert "archive configs/real/cuhk01_posegan.yaml --to " + env["RECORDS"] in calls


def test_fusion_without_a_finished_entry_says_so_and_stops(stub):
    env, entry, results = stub
    proc = script("fusion", "transfer", **{**env, "STATE": "partial"})
    assert proc.returncode == 1
    assert "no finished evaluate-posefusion entry of configs/real/cuhk01_posegan.yaml" in proc.stderr
    assert not (results / "posefusion_cuhk01.json").exists()
    assert "synthetic_to_cuhk01" not in Path(env["CALLS"]).read_text()  # stopped before the next run


def test_pnfusion_runs_until_its_own_stage_and_copies_that_entrys_metrics(stub):
    env, entry, results = stub
    proc = script("pnfusion", **env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (results / "pnfusion_cuhk01.json").read_text() == '{"pose_model": true}'
    assert not (results / "posefusion_cuhk01.json").exists()
    assert "pose model] (PN-GAN)" in proc.stdout
    first = Path(env["CALLS"]).read_text().splitlines()[0]
    assert first == "run configs/real/cuhk01_posegan.yaml --until evaluate-pnfusion"


def test_a_missing_score_entry_stops_with_its_name_and_leaves_no_partial_table(stub):
    env, entry, results = stub
    proc = script("transfer", **{**env, "SCOREKEY": "00000000000"})
    assert proc.returncode == 1
    assert "no finished score-cyclegan entry of configs/real/synthetic_to_cuhk01.yaml" in proc.stderr
    assert list(results.glob("transfer_scores_cuhk01.json*")) == []


def test_until_runs_the_named_stages_in_order_archiving_after_each_then_the_table_with_records(stub):
    env, entry, results = stub
    proc = script("transfer", **env, UNTIL="syn-raw-s0 real-re-e18-s0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    calls = [c for c in Path(env["CALLS"]).read_text().splitlines() if not c.startswith("status")]
    config, records = "configs/real/synthetic_to_cuhk01.yaml", env["RECORDS"]
    assert calls[:4] == [f"run {config} --until syn-raw-s0", f"archive {config} --to {records}",
                         f"run {config} --until real-re-e18-s0", f"archive {config} --to {records}"]
    assert f"run {config}" not in calls  # not the whole config
    assert any(c.startswith(f"compare {config} --records {records} -b syn-raw") for c in calls)


def test_until_is_refused_for_several_runs_or_a_fusion_run(stub):
    env, entry, results = stub
    for runs in (("transfer", "dgnet"), ("fusion",)):
        proc = script(*runs, **env, UNTIL="syn-raw-s0")
        assert proc.returncode == 2 and "UNTIL names stages of one table run" in proc.stderr
    assert not Path(env["CALLS"]).exists()


def test_a_score_stage_missing_from_the_cache_is_read_from_its_record(stub, tmp_path):
    env, entry, results = stub
    cache = Path(env["WS"]) / "cache" / "score-fakes"
    shutil.rmtree(cache)  # the machine that scored them is gone; their records remain
    for i in range(3):
        rec = Path(env["RECORDS"]) / "score-fakes" / f"{env['SCOREKEY']}{i}{env['SCORETAIL']}"
        rec.mkdir(parents=True)
        (rec / "meta.json").write_text("{}")
        (rec / "metrics.json").write_text(f'{{"from_record": {i}}}')
    proc = script("transfer", **{**env, "SCORESTATE": "missing"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the three score stages' metrics, one JSON object keyed by stage
    scores = json.loads((results / "transfer_scores_cuhk01.json").read_text())
    assert scores == {f"score-{n}": {"from_record": i} for i, n in enumerate(("cyclegan", "ptgan", "spgan"))}


def test_until_skips_a_recorded_target_and_a_partial_run_leaves_the_scores_for_later(stub):
    env, entry, results = stub
    rec = Path(env["RECORDS"]) / "train-reid" / env["RAWKEY"]
    rec.mkdir(parents=True)
    (rec / "meta.json").write_text("{}")
    shutil.rmtree(Path(env["WS"]) / "cache" / "score-fakes")  # the scores not measured yet, anywhere
    proc = script("transfer", **{**env, "SCORESTATE": "missing"}, UNTIL="syn-raw-s0 real-re-e18-s0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"syn-raw-s0: recorded ({rec}), skipped" in proc.stdout
    calls = Path(env["CALLS"]).read_text().splitlines()
    config = "configs/real/synthetic_to_cuhk01.yaml"
    assert f"run {config} --until syn-raw-s0" not in calls and f"run {config} --until real-re-e18-s0" in calls
    assert "transfer_scores_cuhk01.json not written: score-cyclegan score-ptgan score-spgan" in proc.stdout
    assert not (results / "transfer_scores_cuhk01.json").exists()
    assert (results / "transfer_cuhk01.json").exists()  # the re-ID table so far is written
