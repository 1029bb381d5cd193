"""`reidaug train` and `reidaug evaluate` end to end on a tiny rendered HDF5 file (CPU, seconds),
and every user mistake as one clear line with a non-zero exit code."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from reidaug.cli import main
from tiny_reid import one_torch_thread, tiny_cli_args, write_reid_h5

TINY = tiny_cli_args()


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("data")
    return {"pair": write_reid_h5(d / "pair.h5", layout="pair"), "mixed": write_reid_h5(d / "mixed.h5", layout="mixed")}


@pytest.fixture(scope="module")
def trained(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    run = tmp_path_factory.mktemp("runs") / "run"
    res = CliRunner().invoke(main, ["train", str(data["pair"]), "--out", str(run), *TINY, "--epochs", "25",
                                    "--set", "milestones=[20]"])
    assert res.exit_code == 0, res.output
    return run, res.output


def _run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.output


def test_train_prints_where_everything_is_and_a_second_run_skips(trained, data) -> None:
    run, out = trained
    for name, file in (("run folder", ""), ("model", "model.pt"), ("log", "train_log.jsonl"), ("plot", "curves.png")):
        line = next(x for x in out.splitlines() if x.strip().startswith(name))
        assert line.split()[-1] == str(run / file if file else run)
        assert (run / file).exists()
    assert "images/s on cpu" in out and "reidaug evaluate" in out
    cfg = json.loads((run / "config.json").read_text())["train"]
    assert ((cfg["backbone"], cfg["epochs"], cfg["lr"], cfg["milestones"], cfg["num_workers"])
            == ("tiny", 25, 0.001, [20], 0))
    code, again = _run("train", str(data["pair"]), "--out", str(run), *TINY, "--epochs", "25",
                       "--set", "milestones=[20]")
    assert code == 0 and "didn't change, skipping" in again


def test_evaluate_writes_metrics_and_cmc_with_high_rank1_on_the_trained_identities(trained, data) -> None:
    run, _ = trained
    code, out = _run("evaluate", str(run))  # --data defaults to the file it was trained on
    assert code == 0, out
    m = json.loads((run / "metrics.json").read_text())
    assert m["rank1"] >= 0.9 and m["mAP"] >= 0.8 and 0 < m["mINP"] <= 1
    assert {"rank5", "rank10"} <= set(m) and m["rank1"] <= m["rank5"] <= m["rank10"]
    assert m["num_queries"] == 10 and m["num_skipped"] == 0 and len(m["cmc"]) == 10  # gallery of 10
    # the strong baseline's evaluation by default: market protocol, cosine, no flip (flip beside)
    assert m["protocol"] == "market" and m["protocol_reason"] == "given" and m["metric"] == "cosine"
    assert m["flip_beside"]["flip"] is True and 0 <= m["flip_beside"]["mAP"] <= 1
    assert "with flip on: rank-1" in out
    assert m["data"]["pipeline_key"] == "tiny-pair" and m["data"]["same_as_training"] is True
    assert m["model"]["sha256"] == hashlib.sha256((run / "model.pt").read_bytes()).hexdigest()
    assert m["model"]["path"] == "model.pt" and m["flip"] is False and m["rerank"] is None
    assert (run / "cmc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header, values = [x.split() for x in out.splitlines() if x.strip().startswith(("queries", "10 "))][:2]
    assert header[:3] == ["queries", "gallery", "rank-1"]
    assert float(values[2]) == pytest.approx(100 * m["rank1"], abs=0.1)


def test_evaluate_on_another_file_with_options(trained, data, tmp_path: Path) -> None:
    run, _ = trained
    out_dir = tmp_path / "ev"
    code, out = _run("evaluate", str(run), "--data", str(data["mixed"]), "--out", str(out_dir), "--no-flip",
                     "--rerank", "--metric", "cosine", "--block-size", "3")
    assert code == 0, out
    m = json.loads((out_dir / "metrics.json").read_text())
    assert m["protocol"] == "market" and m["flip"] is False and m["metric"] == "cosine"
    assert m["rerank"] == {"k1": 20, "k2": 6, "lambda": 0.3} and m["data"]["same_as_training"] is False
    assert m["model"]["path"] == str((run / "model.pt").resolve()) and (out_dir / "cmc.png").is_file()
    assert m["num_gallery_images"] == 30 and m["rank1"] >= 0.9
    code, _ = _run("evaluate", str(run), "--data", str(data["mixed"]), "--out", str(out_dir),
                   "--protocol", "cuhk03-sgs")
    assert code == 0 and json.loads((out_dir / "metrics.json").read_text())["protocol_reason"] == "given"


def test_evaluate_on_disk_gives_the_in_memory_metrics_and_leaves_no_features(trained, data, tmp_path: Path) -> None:
    run, _ = trained
    got = {}
    for mode in ("--in-memory", "--on-disk"):
        out_dir = tmp_path / mode.strip("-")
        for protocol in ("market", "cuhk03-sgs"):
            code, out = _run("evaluate", str(run), "--data", str(data["mixed"]), "--out", str(out_dir), mode,
                             "--protocol", protocol, "--block-size", "4")
            assert code == 0, out
            m = json.loads((out_dir / "metrics.json").read_text())
            got[mode, protocol] = (m["cmc"], m["mAP"], m["mINP"], m["flip_beside"])
        assert sorted(p.name for p in out_dir.iterdir()) == ["cmc.png", "metrics.json"]  # the features are gone
    for protocol in ("market", "cuhk03-sgs"):
        mem, disk = got["--in-memory", protocol], got["--on-disk", protocol]
        np.testing.assert_allclose(disk[0], mem[0], atol=1e-6)
        assert disk[1] == pytest.approx(mem[1], abs=1e-9) and disk[2] == pytest.approx(mem[2], abs=1e-9)
        assert disk[3]["mAP"] == pytest.approx(mem[3]["mAP"], abs=1e-9)


def test_config_file_then_options_then_set(data, tmp_path: Path) -> None:
    cfg = tmp_path / "train.yaml"
    cfg.write_text("epochs: 5\nlr: 1e-2\nlog_every: 1\nhead: ide\n")  # "1e-2" is a YAML string: coerced
    run = tmp_path / "r"
    code, out = _run("train", str(data["pair"]), "--out", str(run), "--config", str(cfg), *TINY, "--set", "epochs=1")
    assert code == 0, out
    saved = json.loads((run / "config.json").read_text())["train"]
    assert (saved["epochs"], saved["lr"], saved["log_every"], saved["head"]) == (1, 0.001, 1, "ide")
    # an earlier run's config.json is a valid --config: same options, so a finished run is found
    code, out = _run("train", str(data["pair"]), "--out", str(run), "--config", str(run / "config.json"))
    assert code == 0 and "didn't change, skipping" in out, out


def test_default_backbone_works_out_of_the_box() -> None:
    from reidaug.train.backbones import pretrained_weights_path
    from reidaug.train.config import TrainConfig

    c = TrainConfig()
    assert (c.backbone, c.pretrained, c.worker_start) == ("efficientnet_lite0", "imagenet", "auto")
    assert pretrained_weights_path(c.backbone, c.pretrained).is_file()  # shipped by its pip package


def _bad_files(tmp: Path, good: Path) -> dict[str, Path]:
    (tmp / "text.h5").write_text("not an hdf5 file")
    blob = good.read_bytes()
    (tmp / "cut.h5").write_bytes(blob[: len(blob) // 2])
    torch.save([1, 2, 3], tmp / "list.pth")
    from reidaug.data.h5format import H5Writer

    with H5Writer(tmp / "nogallery.h5", image_size=(64, 32)) as w:
        w.append("train", images=np.zeros((4, 64, 32, 3), np.uint8), pid=[1, 1, 2, 2], camid=[0, 1, 0, 1],
                 label=[0, 0, 1, 1])
    return {"text": tmp / "text.h5", "cut": tmp / "cut.h5", "list": tmp / "list.pth",
            "nogallery": tmp / "nogallery.h5"}


@pytest.mark.parametrize("case, args, expected, code", [
    ("missing data", ["train", "{tmp}/nope.h5"], "dataset file not found", 1),
    ("not hdf5", ["train", "{text}"], "is not an HDF5 file", 1),
    ("damaged hdf5", ["train", "{cut}"], "cannot open", 1),
    ("unknown backbone", ["train", "{pair}", "--backbone", "resnet5"], 'Did you mean "resnet50"', 2),
    ("unknown loss", ["train", "{pair}", "--set", "loss=tripplet"], 'Did you mean "triplet"', 2),
    ("resnet50 without weights", ["train", "{pair}", "--backbone", "resnet50"],
     "download.pytorch.org/models/resnet50", 1),
    ("pretrained path missing", ["train", "{pair}", "--pretrained", "{tmp}/w.pth"], "does not exist", 2),
    ("pretrained not a state_dict", ["train", "{pair}", "--backbone", "tiny", "--pretrained", "{list}"],
     "expected a state_dict", 1),
    ("unknown option", ["train", "{pair}", "--set", "learning_rate=0.1"], "unknown training option 'learning_rate'", 2),
    ("bad value", ["train", "{pair}", "--set", "epochs=many"], "training option epochs", 2),
    ("out is a file", ["train", "{pair}", "--out", "{pair}"], "is a file", 2),
    ("evaluate: no run", ["evaluate", "{tmp}/norun", "--data", "{pair}"], "does not exist", 1),
    ("evaluate: no gallery", ["evaluate", "{run}", "--data", "{nogallery}"], "no gallery split", 1),
    ("evaluate: unknown protocol", ["evaluate", "{run}", "--protocol", "markett"], 'Did you mean "market"', 2),
])
def test_user_mistakes_are_one_line_and_a_nonzero_exit(case, args, expected, code, data, trained, tmp_path) -> None:
    files = _bad_files(tmp_path, data["pair"])
    fill = {"tmp": tmp_path, "pair": data["pair"], "run": trained[0], **files}
    argv = [a.format(**fill) for a in args]
    if argv[0] == "train" and "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    res = CliRunner().invoke(main, argv)
    assert res.exit_code == code, (case, res.output)
    lines = [x for x in res.output.splitlines() if x.startswith("Error:")]
    assert len(lines) == 1 and expected in lines[0], (case, res.output)
    assert "Traceback" not in res.output and not (tmp_path / "out").exists()  # nothing made before failing
    if case == "resnet50 without weights":
        assert "--pretrained PATH" in lines[0] and "--pretrained none" in lines[0]


def test_an_out_folder_with_another_run_is_refused(trained, data) -> None:
    run, _ = trained
    code, out = _run("train", str(data["pair"]), "--out", str(run), *TINY, "--epochs", "3")
    assert code == 2 and "already holds a finished run" in out and "epochs: 25 -> 3" in out and "--out" in out


def test_an_unrelated_non_empty_folder_is_refused(data, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    code, out = _run("train", str(data["pair"]), "--out", str(tmp_path), *TINY, "--epochs", "1")
    assert code == 2 and "holds no reidaug run" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
