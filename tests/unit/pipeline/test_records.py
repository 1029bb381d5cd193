"""Records (``reidaug archive`` / ``compare --records``): the reports of finished measuring entries kept
under the cache's key, so that a results table outlives the machine whose cache made it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from reidaug.cli import main
from reidaug.pipeline.records import find_record, save_record
from tiny_reid import write_reid_pipeline


def _entry(tmp_path: Path, key: str = "ab" + "1" * 62) -> Path:
    entry = tmp_path / "cache" / "train-reid" / key[:2] / key
    (entry / "run").mkdir(parents=True)
    (entry / "chunks").mkdir()
    (entry / "meta.json").write_text(json.dumps({"key": key, "stage": "train-reid"}))
    (entry / "run" / "config.json").write_text('{"train": {}}')
    (entry / "run" / "metrics.json").write_text('{"rank1": 0.5}')
    (entry / "run" / "train_log.jsonl").write_text("x" * 3000)
    (entry / "run" / "model.pt").write_bytes(b"weights")
    (entry / "run" / "cmc.png").write_bytes(b"png")
    (entry / "chunks" / "00000.json").write_text("{}")  # chunk data, even when it looks like a report
    return entry


def test_a_record_keeps_the_text_reports_only_and_names_what_was_too_big(tmp_path: Path) -> None:
    key = "ab" + "1" * 62
    entry = _entry(tmp_path, key)
    saved = save_record(entry, tmp_path / "rec", "train-reid", key, stage="s0", pipeline="p.yaml", max_bytes=2048)
    assert saved.status == "written"
    files = sorted(p.relative_to(saved.path).as_posix() for p in saved.path.rglob("*") if p.is_file())
    assert files == ["meta.json", "record.json", "run/config.json", "run/metrics.json"]
    info = json.loads((saved.path / "record.json").read_text())
    assert info["stage"] == "s0" and info["key"] == key
    assert info["archived_on"]["cpu"] and isinstance(info["archived_on"]["isa"], list)
    assert info["left_out"] == [{"file": "run/train_log.jsonl", "bytes": 3000}]
    assert find_record(tmp_path / "rec", "train-reid", key) == saved.path
    assert find_record(tmp_path / "rec", "train-reid", "ab" + "2" * 62) is None
    assert find_record(None, "train-reid", key) is None
    # archiving again changes nothing (a committed record is not rewritten with a new date), even when
    # the entry was recomputed elsewhere (another meta.json: timings, date) with the same metrics
    before = (saved.path / "record.json").read_bytes()
    (entry / "meta.json").write_text(json.dumps({"key": key, "stage": "train-reid", "created": "later"}))
    again = save_record(entry, tmp_path / "rec", "train-reid", key, stage="s0", pipeline="p.yaml")
    assert again.status == "unchanged" and (saved.path / "record.json").read_bytes() == before
    # a re-run that measured something else is named, and the record is kept
    (entry / "run" / "metrics.json").write_text('{"rank1": 0.49}')
    other = save_record(entry, tmp_path / "rec", "train-reid", key, stage="s0", pipeline="p.yaml")
    assert other.status == "differs" and other.differs == ("run/metrics.json",)
    assert json.loads((saved.path / "run" / "metrics.json").read_text()) == {"rank1": 0.5}


def test_a_record_whose_meta_names_another_key_is_not_found(tmp_path: Path) -> None:
    key = "ab" + "1" * 62
    saved = save_record(_entry(tmp_path, key), tmp_path / "rec", "train-reid", key, stage="s0", pipeline="p")
    moved = saved.path.with_name("cd" + "3" * 62)
    shutil.move(saved.path, moved)  # a record copied under the wrong key
    assert find_record(tmp_path / "rec", "train-reid", moved.name) is None


def _pipeline(tmp_path: Path, lr_fast: float = 0.01) -> Path:
    return write_reid_pipeline(tmp_path / "p.yaml", "rec",
                               [("base-s0", 0.001, 0), ("base-s1", 0.001, 1), ("fast-s0", lr_fast, 0)])


def test_compare_reads_archived_runs_of_another_workspace_by_key(tmp_path: Path) -> None:
    """Two runs made in one workspace (machine), archived, then the workspace is gone: the table from
    the records equals the one from the cache; a third run, made later in a fresh workspace, joins it;
    a stage whose params changed finds no record."""
    yaml, first, records = _pipeline(tmp_path), tmp_path / "ws1", tmp_path / "records"
    for until in ("base-s0", "base-s1"):
        ran = CliRunner().invoke(main, ["run", str(yaml), "-w", str(first), "--until", until])
        assert ran.exit_code == 0, ran.output
    out = CliRunner().invoke(main, ["archive", str(yaml), "-w", str(first), "--to", str(records)])
    assert out.exit_code == 0, out.output
    assert "2 written, 0 unchanged, 0 differ, 0 recorded earlier (not in this cache), 1 stages neither" in out.output
    assert not list(records.rglob("model.pt")) and len(list(records.rglob("metrics.json"))) == 2
    cached = CliRunner().invoke(main, ["compare", str(yaml), "-w", str(first), "--format", "json"])
    status = CliRunner().invoke(main, ["status", str(yaml), "-w", str(first), "--full-keys"])
    key = next(line.split()[1] for line in status.output.splitlines() if line.startswith("base-s0 "))
    assert len(key) == 64 and (records / "train-reid" / key / "run" / "metrics.json").is_file()
    shutil.rmtree(first)  # the machine is gone

    second = tmp_path / "ws2"
    ran = CliRunner().invoke(main, ["run", str(yaml), "-w", str(second), "--until", "fast-s0"])
    assert ran.exit_code == 0, ran.output
    without = CliRunner().invoke(main, ["compare", str(yaml), "-w", str(second), "--format", "md"])
    assert "base-s0 (missing)" in without.output
    out = CliRunner().invoke(main, ["compare", str(yaml), "-w", str(second), "--records", str(records),
                                    "-b", "base", "--format", "json"])
    assert out.exit_code == 0, out.output
    table = json.loads(out.output)
    assert set(table["arms"]) == {"base", "fast"}
    assert table["arms"]["base"]["seeds"] == json.loads(cached.output)["arms"]["base"]["seeds"]
    assert table["paired"]["fast"]["seeds"] == ["0"]

    out = CliRunner().invoke(main, ["archive", str(yaml), "-w", str(second), "--to", str(records)])
    summary = "1 written, 0 unchanged, 0 differ, 2 recorded earlier (not in this cache), 0 stages neither"
    assert summary in out.output, out.output
    # fast-s0 measured again elsewhere with another result: a warning, or with --strict a failure
    fast_key = next(p.parent for p in records.glob("train-reid/*/record.json")
                    if json.loads(p.read_text())["stage"] == "fast-s0")
    (fast_key / "run" / "metrics.json").write_text('{"rank1": 0.01}')
    for flags, code in (([], 0), (["--strict"], 1)):
        out = CliRunner().invoke(main, ["archive", str(yaml), "-w", str(second), "--to", str(records), *flags])
        assert out.exit_code == code and "0 written, 0 unchanged, 1 differ" in out.output, out.output
        assert "fast-s0" in out.output and "differ from the record" in out.output
    (tmp_path / "other").mkdir()  # base unchanged, fast with another lr: another key, no record
    changed = _pipeline(tmp_path / "other", lr_fast=0.02)
    out = CliRunner().invoke(main, ["compare", str(changed), "-w", str(tmp_path / "ws3"), "--records", str(records),
                                    "--format", "md"])
    assert out.exit_code == 0, out.output
    assert "fast-s0 (missing)" in out.output and "| base | 2 |" in out.output


def test_archive_refuses_an_unknown_kind_with_the_list(tmp_path: Path) -> None:
    out = CliRunner().invoke(main, ["archive", str(_pipeline(tmp_path)), "-w", str(tmp_path / "ws"),
                                    "--to", str(tmp_path / "r"), "--kind", "train-reidd"])
    assert out.exit_code != 0
    assert "--kind train-reidd: not a stage kind" in out.output and "score-fakes" in out.output
    assert not (tmp_path / "r").exists()
