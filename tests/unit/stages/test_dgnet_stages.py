"""DG-Net through the runner: train-dgnet -> generate-dgnet on synthetic people (tiny CPU settings): the
swap-matrix grid, swaps with their provenance (appearance and structure sources), the pairing rules, a
killed training resumed to the same generator, the same bytes from a second workspace, and located errors."""
from __future__ import annotations

import json
import textwrap
import typing
from pathlib import Path

import numpy as np
import pytest

from reidaug.errors import UnknownNameError
from reidaug.pipeline.config import load_pipeline
from reidaug.pipeline.context import read_h5_chunk
from reidaug.pipeline.graph import build_graph
from reidaug.pipeline.runner import RunOptions, run_pipeline
from reidaug.stages import STAGES

PIPELINE = """\
name: dg
stages:
  demo-data: {params: {num_ids: 8, num_cams: 2, images_per_id_per_cam: 2, height: 64, width: 32}}
  ingest: {params: {format: market1501, chunk_size: 8}, inputs: {source: demo-data.dataset}}
  train-dgnet:
    params: {image_height: 64, image_width: 32, app_backbone: tiny, app_pretrained: none, app_dim: 8, struct_dim: 4,
             n_res: 1, mlp_dim: 16, ndf: 4, d_res: 1, iterations: 4, train_batch: 2, checkpoint_every: 2,
             sample_every: 4, log_every: 2, threads: 1}
  generate-dgnet: {params: {pairs: cross-camera, per_image: 2, seed: 3, batch_size: 3, threads: 1}}
"""


def run(tmp_path: Path, text: str = PIPELINE, ws: str = "ws"):
    p = tmp_path / "p.yaml"
    p.write_text(textwrap.dedent(text))
    graph = build_graph(load_pipeline(p), STAGES)
    report = run_pipeline(graph, tmp_path / ws, options=RunOptions(workers=1))
    return {r.name: r.entry for r in report.results}


def chunks(entry: Path) -> dict[str, np.ndarray]:
    parts = [read_h5_chunk(p)[0] for p in sorted((entry / "chunks").glob("*.h5"))]
    return {k: np.concatenate([np.asarray(c[k]) for c in parts]) for k in parts[0]}


def test_swaps_end_to_end_with_provenance_and_the_swap_matrix(tmp_path):
    entries = run(tmp_path)
    train = entries["train-dgnet"]
    assert (train / "models" / "dgnet.pt").is_file()
    assert (train / "train" / "dgnet" / "samples" / "final.png").stat().st_size > 500
    meta = json.loads((train / "meta.json").read_text())["summary"]
    assert meta["steps"] == 4 and meta["train_ids"] == 4 and meta["train_images"] == 16
    log = [json.loads(x) for x in (train / "train" / "dgnet" / "losses.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4] and all(np.isfinite(r[k]) for r in log for k in ("G", "D", "rec_x"))

    real = chunks(entries["ingest"])
    fakes = chunks(entries["generate-dgnet"])
    is_train = real["split"] == "train"
    assert len(fakes["path"]) == 2 * int(is_train.sum())  # per_image 2 for every train image
    by_path = {p: i for i, p in enumerate(real["path"])}
    for k in range(len(fakes["path"])):
        a, s = by_path[fakes["origin_path"][k]], by_path[fakes["structure_path"][k]]
        assert real["split"][a] == "train" and real["split"][s] == "train"
        assert fakes["pid"][k] == real["pid"][a] and fakes["structure_pid"][k] == real["pid"][s]
        assert fakes["pid"][k] != fakes["structure_pid"][k]  # always another identity's structure
        assert fakes["camid"][k] == real["camid"][s] != real["camid"][a]  # cross-camera; the camera of the structure
        assert fakes["origin_record"][k] == real["record_index"][a]
        assert fakes["structure_record"][k] == real["record_index"][s]
    assert set(fakes["gen_checksum"]) == {meta["checksum"]}
    assert len(set(fakes["path"])) == len(fakes["path"])
    report = json.loads((entries["generate-dgnet"] / "meta.json").read_text())["summary"]["report"]
    assert report[0].startswith(f"{len(fakes['path'])} DG-Net swaps (2 per train image, cross-camera")

    again = run(tmp_path, ws="ws2")  # a second workspace: the same generator and the same swaps, byte for byte
    for stage in ("generate-dgnet",):
        a = sorted((entries[stage] / "chunks").glob("*.h5"))
        b = sorted((again[stage] / "chunks").glob("*.h5"))
        assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]


def test_pairing_rules_pick_donors_of_other_identities():
    from reidaug.gen.dgnet import draw_swaps

    labels = np.array([0, 0, 1, 1, 2, 2])
    cams = np.array([0, 1, 0, 1, 0, 1])
    rng = np.random.default_rng(0)
    same, short = draw_swaps(labels, cams, range(6), "same-camera", 2, rng)
    assert short == 0 and all(labels[w.appearance] != labels[w.structure] for w in same)
    assert all(cams[w.appearance] == cams[w.structure] for w in same)
    many, short = draw_swaps(labels, cams, [0], "cross-camera", 5, rng)
    assert short == 1 and {w.structure for w in many} == {3, 5}  # only two cross-camera donors of other ids
    rand, _ = draw_swaps(labels, cams, [0], "random", 4, rng)
    assert sorted(w.structure for w in rand) == [2, 3, 4, 5]


def test_a_killed_dgnet_training_resumes_to_the_same_generator(tmp_path):
    from reidaug.gen.common import pick_device
    from reidaug.gen.dgnet import IdentityImages, TrainSettings, train_model

    rng = np.random.default_rng(0)
    data = IdentityImages(rng.integers(0, 255, (8, 64, 32, 3), dtype=np.uint8), np.array([0, 0, 1, 1, 2, 2, 3, 3]),
                          np.arange(8) // 2 + 10, np.arange(8) % 2, [f"{i}.png" for i in range(8)], np.arange(8))
    hp = dict(image_height=64, image_width=32, app_backbone="tiny", app_pretrained="none", app_dim=8, struct_dim=4,
              n_res=1, mlp_dim=16, ndf=4, d_res=1)
    settings = TrainSettings(iterations=6, train_batch=2, checkpoint_every=2, sample_every=100, log_every=2)
    cpu = pick_device("cpu", "test")
    straight = train_model(data, hp, settings, tmp_path / "a", tmp_path / "a.pt", cpu)
    with pytest.raises(KeyboardInterrupt):
        train_model(data, hp, settings, tmp_path / "b", tmp_path / "b.pt", cpu, should_stop=lambda s: s == 4)
    resumed = train_model(data, hp, settings, tmp_path / "b", tmp_path / "b.pt", cpu)
    assert resumed.resumed_from == 4 and resumed.checksum == straight.checksum
    assert (tmp_path / "a" / "losses.jsonl").read_text() == (tmp_path / "b" / "losses.jsonl").read_text()


def test_one_image_per_identity_or_an_unknown_backbone_is_a_clear_error(tmp_path):
    from reidaug.errors import DataError
    from reidaug.gen.dgnet import IdentityImages, check_identities

    one_each = IdentityImages(np.zeros((3, 8, 4, 3), np.uint8), np.array([0, 1, 2]), np.array([5, 6, 7]),
                              np.zeros(3, int), ["a", "b", "c"], np.arange(3))
    with pytest.raises(DataError, match="every train identity has one image.*Fix"):
        check_identities(one_each, "train-dgnet")
    text = PIPELINE.replace("app_backbone: tiny", "app_backbone: efficientnet_lite")
    with pytest.raises(UnknownNameError, match=r"stage 'train-dgnet'.*unknown app_backbone \"efficientnet_lite\"\. "
                                               r"Did you mean \"efficientnet_lite0\""):
        run(tmp_path, text)


EXPORT = PIPELINE + """\
  labels-structure:
    uses: assign-labels
    params: {schemes: {real: lsr, dgnet: structure}, epsilon: 0.2}
    inputs: {dgnet: generate-dgnet.fakes}
  export-structure:
    uses: export-hdf5
    params: {image_height: 64, image_width: 32}
    inputs: {dgnet: generate-dgnet.fakes, labels: labels-structure.labels}
  labels-appearance:
    uses: assign-labels
    params: {schemes: {real: lsr, dgnet: lsr}}
    inputs: {dgnet: generate-dgnet.fakes}
  export-appearance:
    uses: export-hdf5
    params: {image_height: 64, image_width: 32}
    inputs: {dgnet: generate-dgnet.fakes, labels: labels-appearance.labels}
  export-real:
    uses: export-hdf5
    params: {image_height: 64, image_width: 32}
  reid:
    uses: train-reid
    inputs: {data: export-structure.hdf5}
    params: {backbone: tiny, pretrained: none, height: 64, width: 32, epochs: 1, warmup_epochs: 0,
             train_batch_size: 8, log_every: 2, num_workers: 0, evaluate: false}
"""


def test_swaps_export_with_the_appearance_or_the_structure_identity_as_target(tmp_path):
    from reidaug.data.h5format import open_h5, verify

    entries = run(tmp_path, EXPORT)
    fakes = chunks(entries["generate-dgnet"])
    for name in ("export-structure", "export-appearance", "export-real"):
        assert verify(entries[name] / "dataset.h5") == [], name
    with open_h5(entries["export-structure"] / "dataset.h5") as f:
        m = f.meta("train")
        assert "dgnet" in m.source_names.values() and "structure" in m.label_scheme_names.values()
        dg = m.source == {v: k for k, v in m.source_names.items()}["dgnet"]
        assert dg.sum() == len(fakes["path"]) and (m.origin[dg] >= 0).all()
        assert (m.pid[m.origin[dg]] == m.pid[dg]).all()  # the origin is the appearance source: its identity
        rows = np.flatnonzero(dg)
        dense = f.targets("train", rows)
        label_of = {int(p): int(lbl) for p, lbl in zip(m.pid[~m.is_fake], m.label[~m.is_fake])}
        by_path = {p: k for k, p in enumerate(fakes["path"])}
        for r, row in zip(rows, dense):
            k = by_path[str(m.path[r])]
            structure = label_of[int(fakes["structure_pid"][k])]
            assert row.argmax() == structure != m.label[r]  # the target is the structure source's identity
            assert row[structure] == pytest.approx(1 - 0.2 + 0.2 / f.info.num_classes, abs=2e-3)
    with open_h5(entries["export-appearance"] / "dataset.h5") as f:
        m = f.meta("train")
        dg = np.flatnonzero(m.source == {v: k for k, v in m.source_names.items()}["dgnet"])
        assert (f.targets("train", dg).argmax(axis=1) == m.label[dg]).all()  # appearance identity
        assert "structure" not in m.label_scheme_names.values()  # declared only where used
    with open_h5(entries["export-real"] / "dataset.h5") as f:
        assert "dgnet" not in f.meta("train").source_names.values()  # a file without swaps keeps the old enum
    summary = json.loads((entries["reid"] / "meta.json").read_text())["summary"]
    assert summary["steps"] >= 1 and np.isfinite(summary["final_loss"])  # the trainer reads swaps like any fake


def test_the_structure_scheme_is_for_dgnet_swaps_only():
    with pytest.raises(Exception, match=r"structure scheme labels a DG-Net swap.*\['camstyle'\].*dgnet set only"):
        STAGES["assign-labels"].params(schemes={"camstyle": "structure"})


def test_score_dgnet_on_held_out_identities(tmp_path, shared_dir):
    judge = shared_dir / "models" / "osnet_x0_25_msmt17.onnx"
    text = PIPELINE + ("  score-dgnet: {params: {num_images: 6, grid: 3, influence_ids: 3, threads: 1}}\n"
                       f"  score-judged: {{uses: score-dgnet, params: {{num_images: 6, grid: 3, influence_ids: 3, "
                       f"threads: 1, judge: {judge}}}}}\n")
    entries = run(tmp_path, text)
    m = json.loads((entries["score-dgnet"] / "metrics.json").read_text())
    real = chunks(entries["ingest"])
    query_ids = set(real["pid"][real["split"] == "query"].tolist())
    assert m["split"] == "query" and m["num_images"] == 6 and m["num_ids"] <= len(query_ids)
    for k in ("ssim_self_reconstruction", "ssim_same_identity_reconstruction", "ssim_other_photo_baseline"):
        assert m[k]["n"] == 6 and -1 <= m[k]["mean"] <= 1
    inf = m["appearance_influence"]
    assert inf["num_ids"] == 3 and 0 <= inf["appearance_share"] <= 1 and 0 <= inf["colour_from_appearance"] <= 1
    assert m["judge_identity"] is None
    assert (entries["score-dgnet"] / "swaps.png").stat().st_size > 500
    report = json.loads((entries["score-dgnet"] / "meta.json").read_text())["summary"]["report"]
    assert "never trained on" in report[0] and "colour follows the appearance source" in report[1]
    assert "no judge" in report[2]
    j = json.loads((entries["score-judged"] / "metrics.json").read_text())["judge_identity"]
    n_query = int((real["split"] == "query").sum())
    assert j["num_swaps"] == 6 and j["gallery"] == n_query - 3  # the three sources left out
    assert j["appearance"] + j["structure"] + j["neither"] == pytest.approx(1.0)
    report = json.loads((entries["score-judged"] / "meta.json").read_text())["summary"]["report"]
    assert "appearance source's person" in report[2]
    with pytest.raises(Exception, match="train holds the identities the generator learnt"):
        run(tmp_path, PIPELINE + "  score-dgnet: {params: {split: train}}\n", ws="ws3")


class _Decoder:
    """A stand-in DG-Net whose swap is ``pick(appearance image, structure image)``: what a decoder that ignores
    one code does."""

    def __init__(self, pick):
        self.pick = pick

    def encode_appearance(self, x):
        return x

    def encode_structure(self, x):
        return x

    def decode(self, a, s):
        return self.pick(a, s)


def test_appearance_influence_tells_a_decoder_that_ignores_appearance_from_one_that_uses_it():
    import torch

    from reidaug.gen.dgnet import appearance_influence, swap_grid

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 16, 8, 3), dtype=np.uint8)
    images[..., 0] = rng.integers(0, 256, (5, 1, 1))  # each person has its own red: a colour to follow

    def to_dev(a):
        return torch.from_numpy(a).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)

    def influence(pick):
        return appearance_influence(swap_grid(_Decoder(pick), images, to_dev), images)

    blind = influence(lambda a, s: s)  # the structure image, whatever a
    assert blind["appearance_std"] == pytest.approx(0, abs=1e-6) and blind["appearance_share"] < 1e-5
    assert blind["colour_from_appearance"] == 0 and blind["structure_std"] == pytest.approx(blind["real_std"], 1e-3)
    copy = influence(lambda a, s: a)  # the appearance image, whatever s
    assert copy["structure_std"] == pytest.approx(0, abs=1e-6) and copy["appearance_share"] > 1 - 1e-5
    assert copy["colour_from_appearance"] == 1
    # brightness only: all of the spread comes from a, none of the colour (each pair r, c and c, r split evenly)
    grey = influence(lambda a, s: a.mean(1, keepdim=True).expand_as(a))
    assert grey["appearance_share"] > 1 - 1e-5 and grey["colour_from_appearance"] == 0.5
    with pytest.raises(Exception, match="k >= 2 images"):
        appearance_influence(swap_grid(_Decoder(lambda a, s: a), images[:1], to_dev), images[:1])


def test_the_judge_of_swaps_counts_whose_person_it_finds():
    from reidaug.gen.dgnet import judge_identity_of_swaps

    eye = np.eye(4, dtype=np.float32)  # person p's features: axis p
    labels = np.array([0, 1, 2])
    gallery_f, gallery_labels = eye[[0, 1, 2, 3, 0]], np.array([0, 1, 2, 3, 0])
    looks_like_structure = np.broadcast_to(eye[:3][None, :], (3, 3, 4))  # swap [r, c] = person c
    j = judge_identity_of_swaps(looks_like_structure, eye[:3], labels, gallery_f, gallery_labels)
    assert (j["appearance"], j["structure"], j["neither"], j["num_swaps"]) == (0, 1, 0, 6)
    assert j["real_rank1"] == 1 and j["gallery"] == 5
    looks_like_appearance = np.broadcast_to(eye[:3][:, None], (3, 3, 4))
    assert judge_identity_of_swaps(looks_like_appearance, eye[:3], labels, gallery_f, gallery_labels)["appearance"] == 1
    nobody = np.broadcast_to(eye[3], (3, 3, 4))  # person 3: neither source
    assert judge_identity_of_swaps(nobody, eye[:3], labels, gallery_f, gallery_labels)["neither"] == 1
    with pytest.raises(Exception, match="non-empty gallery"):
        judge_identity_of_swaps(nobody, eye[:3], labels, gallery_f[:0], gallery_labels[:0])

def test_bench_dgnet_influence_reads_a_checkpoint_or_a_finished_generator(tmp_path, capsys):
    import shutil
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
    from dgnet_influence import main

    text = PIPELINE.replace("  generate-dgnet:", "  # generate-dgnet:").replace("log_every: 2,", "log_every: 2, "
                                                                                  "keep_checkpoints: true,")
    entries = run(tmp_path, text)
    assert main([str(entries["train-dgnet"]), str(entries["ingest"]), "--ids", "3"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["step"] == "end" and done["num_ids"] == 3 and 0 <= done["colour_from_appearance"] <= 1
    assert done["adain_gamma_abs_mean"] > 0
    # a run still training: its .partial folder holds the last checkpoint and its progress file, no generator
    part = tmp_path / "x.partial"
    shutil.copytree(entries["train-dgnet"] / "train", part / "train")
    assert main([str(part), str(entries["ingest"]), "--ids", "3"]) == 0
    mid = json.loads(capsys.readouterr().out)
    assert mid["step"] == 4 and mid["appearance_std"] == pytest.approx(done["appearance_std"], abs=1e-3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "empty"), str(entries["ingest"])])


def test_g_init_is_keyed_only_when_it_is_not_the_default(tmp_path):
    def key(extra: str) -> str:
        p = tmp_path / "p.yaml"
        p.write_text(PIPELINE.replace("log_every: 2,", f"log_every: 2,{extra}"))
        return build_graph(load_pipeline(p), STAGES).keys["train-dgnet"]

    # the first CUHK01 generator (trained before g_init existed) keeps its key; kaiming is another generator
    assert key("") == key(" g_init: normal,") != key(" g_init: kaiming,")
    with pytest.raises(Exception, match="g_init"):
        key(" g_init: xavier,")
    # d_init likewise (added after the Kaiming generator: its key stays)
    assert key(" g_init: kaiming,") == key(" g_init: kaiming, d_init: normal,") \
        != key(" g_init: kaiming, d_init: kaiming,")


def test_the_stage_offers_the_inits_the_model_knows():
    # the stage's Literal choices (torch-free, for the CLI) and the model's INITS are written twice: keep them equal
    from reidaug.models.dgnet import INITS
    from reidaug.stages.train_dgnet import TrainDGNetParams

    for field in ("g_init", "d_init"):
        assert typing.get_args(TrainDGNetParams.model_fields[field].annotation) == INITS
