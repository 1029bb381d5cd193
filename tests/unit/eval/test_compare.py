"""reidaug compare: runs that differ only by seed are one arm; the params that differ, mean ± std,
paired differences against a baseline; markdown, CSV and JSON; a pipeline YAML read from the cache."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from reidaug.cli import main
from reidaug.errors import ConfigError
from reidaug.eval.compare import compare, read_run, render
from tiny_reid import write_reid_pipeline


def fake_run(root: Path, name: str, seed: int, rank1: float, map_: float, *, split: str = "test",
             data: str = "fp-real", **train) -> Path:
    """A run folder as reidaug train writes it (the keys compare reads)."""
    d = root / name
    d.mkdir(parents=True)
    cfg = {"train": {"seed": seed, "epochs": 12, "lr": 0.00035, "num_workers": 2, **train},
           "resolved": {"data": f"/data/{data}.h5", "data_fingerprint": data}}
    (d / "config.json").write_text(json.dumps(cfg))
    metrics = {"rank1": rank1, "rank5": rank1 + 0.2, "mAP": map_, "protocol": "market", "metric": "cosine",
               "flip": False, "split": split}
    (d / ("metrics_val.json" if split == "val" else "metrics.json")).write_text(json.dumps(metrics))
    return d


@pytest.fixture()
def runs(tmp_path: Path) -> list[Path]:
    return [fake_run(tmp_path, "real-s0", 0, 0.30, 0.35), fake_run(tmp_path, "real-s1", 1, 0.32, 0.36),
            fake_run(tmp_path, "aug-s0", 0, 0.34, 0.38, data="fp-aug", fake_per_batch=32),
            fake_run(tmp_path, "aug-s1", 1, 0.35, 0.40, data="fp-aug", fake_per_batch=32),
            fake_run(tmp_path, "real-lr-s0", 0, 0.20, 0.25, lr=0.01, num_workers=0)]


def test_seeds_make_an_arm_and_paired_differences_are_per_seed(runs: list[Path]) -> None:
    rec = compare([read_run(r) for r in runs], baseline="real")
    assert list(rec["arms"]) == ["real", "aug", "real-lr"]
    real, aug = rec["arms"]["real"], rec["arms"]["aug"]
    assert real["n"] == 2 and real["seeds"]["1"]["mAP"] == pytest.approx(0.36)
    assert real["mAP"]["mean"] == pytest.approx(0.355) and real["mAP"]["std"] == pytest.approx(0.00707107, rel=1e-5)
    # what differs between arms, and nothing else (num_workers never changes a result)
    assert rec["columns"] == ["fake_per_batch", "lr", "data"]
    assert aug["params"]["fake_per_batch"] == 32 and aug["params"]["data"] == "fp-aug.h5"
    d = rec["paired"]["aug"]
    assert d["seeds"] == ["0", "1"] and d["mAP"]["per_seed"] == pytest.approx([0.03, 0.04])
    assert d["mAP"]["mean"] == pytest.approx(0.035) and d["mAP"]["std"] == pytest.approx(0.00707107, rel=1e-5)
    assert rec["paired"]["real-lr"]["rank1"]["per_seed"] == pytest.approx([-0.10]) and \
        rec["paired"]["real-lr"]["rank1"]["std"] is None


def test_markdown_csv_and_json(runs: list[Path]) -> None:
    rec = compare([read_run(r) for r in runs], baseline="real")
    md = render(rec, "md")
    assert "| aug | 2 | 32 | 0.00035 | fp-aug.h5 | 34.5 ± 0.7 | 54.5 ± 0.7 | 39.0 ± 1.4 |" in md
    assert "| real-lr | 1 | 16 | 0.01 | fp-real.h5 | 20.0 | 40.0 | 25.0 |" in md  # one seed: no ± 0.0
    assert "| aug | 0, 1 | +3.5 ± 0.7 (+4.0, +3.0) | +3.5 ± 0.7 (+3.0, +4.0) |" in md
    rows = list(csv.DictReader(io.StringIO(render(rec, "csv"))))
    assert [r["arm"] for r in rows] == ["real", "aug", "real-lr"]
    assert float(rows[1]["paired_mAP_mean"]) == pytest.approx(0.035) and rows[0]["paired_mAP_mean"] == ""
    back = json.loads(render(rec, "json"))
    assert back["baseline"] == "real" and back["arms"]["aug"]["seeds"]["0"]["rank1"] == pytest.approx(0.34)


def test_a_param_left_unset_reads_as_a_dash(tmp_path: Path) -> None:
    """sources None (every source) beside ["camstyle"]: the table says -, not Python's None."""
    rec = compare([read_run(fake_run(tmp_path, "raw-s0", 0, 0.1, 0.1, sources=None)),
                   read_run(fake_run(tmp_path, "gan-s0", 0, 0.1, 0.1, sources=["camstyle"]))])
    md = render(rec, "md")
    assert "| raw | 1 | - |" in md and '| gan | 1 | ["camstyle"] |' in md and "None" not in md


def test_validation_and_test_runs_are_never_one_arm(tmp_path: Path) -> None:
    a = fake_run(tmp_path, "r-s0", 0, 0.3, 0.3)
    b = fake_run(tmp_path, "r-s1", 1, 0.4, 0.4, split="val")
    rec = compare([read_run(a), read_run(b)])
    assert [v["n"] for v in rec["arms"].values()] == [1, 1] and "split" in rec["columns"]


def test_bad_sources_and_baselines_say_the_fix(tmp_path: Path, runs: list[Path]) -> None:
    with pytest.raises(ConfigError, match=r"no config.json.*reidaug train"):
        read_run(tmp_path / "nothing-here")
    with pytest.raises(ConfigError, match=r"--baseline 'rea' is none of the arms compared: real, aug, real-lr"):
        compare([read_run(r) for r in runs], baseline="rea")
    out = CliRunner().invoke(main, ["compare", str(tmp_path / "nothing-here")])
    assert out.exit_code != 0 and "no config.json" in out.output and "Traceback" not in out.output


def test_cli_reads_a_pipelines_train_reid_stages_from_the_cache(tmp_path: Path) -> None:
    """Two seeds of a tiny real-only run and one with another lr, trained by `reidaug run`; a stage
    not yet run is listed as missing, not dropped."""
    yaml = write_reid_pipeline(tmp_path / "p.yaml", "cmp",
                               [("base-s0", 0.001, 0), ("base-s1", 0.001, 1), ("fast-s0", 0.01, 0)],
                               fine_tunings=[("tune-s0", "base-s0")])
    ws = tmp_path / "ws"
    for until in ("base-s0", "base-s1"):
        ran = CliRunner().invoke(main, ["run", str(yaml), "-w", str(ws), "--until", until])
        assert ran.exit_code == 0, ran.output
    out = CliRunner().invoke(main, ["compare", str(yaml), "-w", str(ws), "-b", "base", "--format", "md"])
    assert out.exit_code == 0, out.output
    assert "| base | 2 |" in out.output and "fast-s0 (missing)" in out.output
    ran = CliRunner().invoke(main, ["run", str(yaml), "-w", str(ws)])
    assert ran.exit_code == 0, ran.output
    target = tmp_path / "cmp.json"
    out = CliRunner().invoke(main, ["compare", str(yaml), "-w", str(ws), "-b", "base", "--format", "json",
                                    "-o", str(target)])
    assert out.exit_code == 0, out.output
    rec = json.loads(target.read_text())
    # tune-s0 has base-s0's params and data: its init (the CLI names the init stage's arm) makes it another arm
    assert rec["columns"] == ["lr", "init"] and set(rec["arms"]) == {"base", "fast", "tune"}
    assert rec["arms"]["tune"]["params"]["init"] == "base" and rec["arms"]["base"]["params"]["init"] == "-"
    assert rec["paired"]["fast"]["seeds"] == ["0"]


def test_cli_keeps_fine_tunings_of_two_pipelines_apart_when_their_pre_trainings_differ(tmp_path: Path) -> None:
    """Two YAMLs with the same stage names: base-s0 differs (lr), tune-s0 (its fine-tuning) has the same
    params and data in both. The init stage's name is the same; its seedless key is not: two arms."""
    yamls = [write_reid_pipeline(tmp_path / f"{name}.yaml", name, [("base-s0", lr, 0)],
                                 fine_tunings=[("tune-s0", "base-s0")])
             for name, lr in (("one", 0.001), ("two", 0.01))]
    ws = tmp_path / "ws"
    for yaml in yamls:
        ran = CliRunner().invoke(main, ["run", str(yaml), "-w", str(ws)])
        assert ran.exit_code == 0, ran.output
    target = tmp_path / "cmp.json"
    out = CliRunner().invoke(main, ["compare", *map(str, yamls), "-w", str(ws), "--format", "json",
                                    "-o", str(target)])
    assert out.exit_code == 0, out.output
    arms = json.loads(target.read_text())["arms"]
    tunes = {name: arm for name, arm in arms.items() if arm["params"]["init"] != "-"}
    assert len(arms) == 4 and len(tunes) == 2, arms
    assert all(arm["n"] == 1 and arm["params"]["init"] == "base" for arm in tunes.values())


def _finetune(root: Path, name: str, seed: int, rank1: float, init: Path | str, **kw) -> Path:
    d = fake_run(root, name, seed, rank1, rank1 + 0.02, **kw)
    cfg = json.loads((d / "config.json").read_text())
    cfg["resolved"]["init_from"] = str(init)
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_fine_tunings_are_their_own_arms_by_what_they_started_from(tmp_path: Path) -> None:
    """Same recipe and data as the real-only runs: started from a pre-training it is another arm, and
    fine-tunings of two pre-trainings (other data) are two arms, seeds of each together; a pre-training
    whose folder is gone stands by its path (never merged with another)."""
    real = [fake_run(tmp_path, f"real-s{s}", s, 0.40 + s / 100, 0.43) for s in (0, 1)]
    raw = [fake_run(tmp_path, f"pre-raw-s{s}", s, 0.10, 0.12, data="fp-syn") for s in (0, 1)]
    sp = [fake_run(tmp_path, f"pre-sp-s{s}", s, 0.08, 0.10, data="fp-sp") for s in (0, 1)]
    ft = [*(_finetune(tmp_path, f"ft-raw-s{s}", s, 0.53, raw[s]) for s in (0, 1)),
          *(_finetune(tmp_path, f"ft-sp-s{s}", s, 0.50, sp[s]) for s in (0, 1)),
          _finetune(tmp_path, "ft-gone-s0", 0, 0.51, tmp_path / "nowhere" / "run")]
    rec = compare([read_run(p) for p in (*real, *ft)], baseline="real")
    assert {a: v["n"] for a, v in rec["arms"].items()} == {"real": 2, "ft-raw": 2, "ft-sp": 2, "ft-gone": 1}
    assert rec["columns"] == ["init"]
    assert rec["arms"]["ft-raw"]["params"]["init"] == "a run on fp-syn.h5"
    assert rec["arms"]["real"]["params"]["init"] == "-"
    # the CLI's label (the init stage's arm) groups the same way and names it
    labelled = [read_run(ft[s], init_label="pre-raw") for s in (0, 1)]
    rec = compare([read_run(p) for p in real] + labelled)
    assert rec["arms"]["ft-raw"]["n"] == 2 and rec["arms"]["ft-raw"]["params"]["init"] == "pre-raw"


def test_runs_tested_on_another_file_are_another_arm(tmp_path: Path) -> None:
    own = fake_run(tmp_path, "own-s0", 0, 0.6, 0.5, data="fp-syn")
    other = fake_run(tmp_path, "cross-s0", 0, 0.1, 0.12, data="fp-syn")
    metrics = json.loads((other / "metrics.json").read_text())
    metrics["data"] = {"same_as_training": False, "train_fingerprint": "fp-target-0123456789"}
    (other / "metrics.json").write_text(json.dumps(metrics))
    rec = compare([read_run(own), read_run(other, eval_label="export-real")])
    assert set(rec["arms"]) == {"own", "cross"} and rec["columns"] == ["eval_data"]
    assert rec["arms"]["cross"]["params"]["eval_data"] == "export-real"
    unlabelled = read_run(other)  # grouped by the whole fingerprint, named by its start
    assert unlabelled.evaluation["eval_data"] == "fp-target-0123456789" and unlabelled.eval_label == "fp-target-01"
    # a test-only file (no train split, no fingerprint): its path, whole, so two such files stay two arms
    for run, path in ((own, "/work/shared/data/a/test_only.h5"), (other, "/work/shared/data/b/test_only.h5")):
        m = json.loads((run / "metrics.json").read_text())
        m["data"] = {"same_as_training": False, "train_fingerprint": None, "path": path}
        (run / "metrics.json").write_text(json.dumps(m))
    assert len(compare([read_run(own), read_run(other)])["arms"]) == 2


def test_a_loop_of_pre_trainings_ends_and_weights_files_name_their_run(tmp_path: Path) -> None:
    """A config whose init_from is its own folder (hand-copied folders) reads, not recursing without end;
    an init_from that is a run's model.pt is read as that run."""
    loop = _finetune(tmp_path, "loop-s0", 0, 0.5, tmp_path / "loop-s0")
    assert read_run(loop).init.startswith("run:")
    pre = fake_run(tmp_path, "pre-s0", 0, 0.1, 0.1, data="fp-syn")
    ft = _finetune(tmp_path, "ft-s0", 0, 0.5, pre / "model.pt")
    assert read_run(ft).init_label == "a run on fp-syn.h5"
