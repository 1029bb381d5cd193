"""train-posegan → generate-poseguided → assign-labels → export-hdf5 on synthetic people (tiny
CPU settings, ground-truth keypoints through the OpenPose CSV backend), resume, and the errors a
user meets."""
from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from reidaug.data.h5format import open_h5, verify
from reidaug.errors import ConfigError, DataError, StageError
from reidaug.pipeline.config import load_pipeline
from reidaug.pipeline.context import read_h5_chunk
from reidaug.pipeline.graph import build_graph
from reidaug.pipeline.runner import RunOptions, run_pipeline
from reidaug.stages import STAGES

DEMO = dict(num_ids=6, num_cams=2, images_per_id_per_cam=3, height=64, width=32)
TRAIN = ("{model: pg2, image_height: 32, image_width: 16, ngf: 4, ndf: 4, iterations: 6, train_batch: 2, "
         "checkpoint_every: 3, sample_every: 3, log_every: 2}")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """The demo-data dataset's ground-truth keypoints as an OpenPose CSV (extract-pose's
    ``openpose-csv`` backend: exact poses, no estimator to run) and its train image paths."""
    from reidaug.data.synthetic import SyntheticSpec, write_dataset
    from reidaug.pose.openpose import write_openpose_csv

    root = tmp_path_factory.mktemp("synthetic")
    write_dataset(root / "data", SyntheticSpec(**DEMO))  # the same spec (and seed) demo-data draws
    doc = json.loads((root / "data" / "keypoints.json").read_text())["images"]
    own = {rel: np.asarray(kp, np.float32) for rel, kp in doc.items() if not rel.startswith("gt_camstyle")}
    write_openpose_csv(root / "poses.csv", {rel.rsplit("/", 1)[-1]: kp for rel, kp in own.items()})
    train = sorted(rel for rel in own if rel.startswith("bounding_box_train/"))
    return {"csv": root / "poses.csv", "train": train, "keypoints": own}


def pipeline(synthetic, train: str = TRAIN, generate: str = "{batch_size: 5}", *, cluster: bool = True,
             tail: bool = True, extra: str = "") -> str:
    stages = [
        f"demo-data: {{params: {json.dumps(DEMO).replace(chr(34), '')}}}",
        "ingest: {params: {format: market1501, chunk_size: 16}, inputs: {source: demo-data.dataset}}",
        f"extract-pose: {{params: {{backend: openpose-csv, annotations: {synthetic['csv']}}}}}",
    ]
    if cluster:
        stages.append("cluster-poses: {params: {k: 3, min_confident: 8, out_height: 64, out_width: 32}}")
    stages.append(f"train-posegan: {{params: {train}}}")
    if generate:
        stages.append(f"generate-poseguided: {{params: {generate}}}")
    if tail:
        stages += ["assign-labels: {params: {schemes: {poseguided: lsro}}, "
                   "inputs: {poseguided: generate-poseguided.fakes}}",
                   "export-hdf5: {params: {image_height: 64, image_width: 32}, inputs: {poseguided: "
                   "generate-poseguided.fakes, labels: assign-labels.labels, keypoints: extract-pose.keypoints}}"]
    return "name: t\nstages:\n" + "".join(f"  {line}\n" for line in stages) + textwrap.indent(extra, "  ")


def run(tmp_path: Path, text: str, ws: Path | None = None):
    p = tmp_path / "p.yaml"
    p.write_text(text)
    graph = build_graph(load_pipeline(p), STAGES)
    report = run_pipeline(graph, ws or tmp_path / "ws", options=RunOptions(workers=2))
    return {r.name: r.entry for r in report.results}, graph


def chunks(entry: Path) -> dict[str, np.ndarray]:
    parts = [read_h5_chunk(p)[0] for p in sorted((entry / "chunks").glob("*.h5"))]
    parts = [c for c in parts if len(c.get("path", []))]
    return {k: np.concatenate([np.asarray(c[k]) for c in parts]) for k in parts[0]}


def tiny_reid(data: str, evaluation: bool = False, name: str = "train-reid", seed: int | None = None) -> str:
    """A train-reid stage line: the tiny backbone on ``data`` for a few seconds (with ``evaluation``, the
    market / cosine / no-flip evaluation that pose fusion's unfused row is compared with)."""
    params = ("backbone: tiny, pretrained: none, height: 64, width: 32, epochs: 1, train_batch_size: 8, "
              "num_workers: 0, threads: 1, random_erasing: false, warmup_epochs: 0")
    if evaluation:
        params += ", eval_flip: false, eval_metric: cosine, eval_protocol: market"
    if seed is not None:
        params += f", seed: {seed}"
    uses = "" if name == "train-reid" else "uses: train-reid, "
    return f"{name}: {{{uses}params: {{{params}}}, inputs: {{data: {data}}}}}\n"


def summary(entry: Path) -> dict:
    return json.loads((entry / "meta.json").read_text())["summary"]


@pytest.fixture(scope="module")
def pg2_run(synthetic, tmp_path_factory):
    """The whole tiny PG2 pipeline with canonical targets, run once for the tests that read it."""
    tmp = tmp_path_factory.mktemp("pg2")
    entries, graph = run(tmp, pipeline(synthetic))
    return {"entries": entries, "ws": tmp / "ws", "tmp": tmp, "graph": graph}


def test_pg2_canonical_end_to_end_with_pairs_provenance_labels_and_export(pg2_run, synthetic):
    entries = pg2_run["entries"]
    train = entries["train-posegan"]
    assert sorted(p.name for p in (train / "models").glob("*.pt")) == ["pg2.pt"]
    meta = summary(train)
    assert meta["steps"] == 6 and meta["steps_g1"] == 4  # 22/36 of the steps train G1, the rest G2
    log = [json.loads(x) for x in (train / "train" / "pg2" / "losses.jsonl").read_text().splitlines()]
    assert [(r["step"], r["phase"]) for r in log] == [(2, "G1"), (4, "G1"), (6, "G2")]
    assert "G2_l1" in log[-1] and all(np.isfinite(r.get("G1", r.get("G2"))) for r in log)
    assert (train / "train" / "pg2" / "samples" / "final.png").stat().st_size > 500
    assert not (train / "train" / "pg2" / "checkpoint.pt").exists()  # dropped once done

    # pairs: train identities only, same identity, two different images; all recorded
    doc = json.loads((train / "pairs.json").read_text())
    images = doc["images"]
    assert doc["counts"]["pairs"] == len(doc["pairs"]) == meta["pairs"]["pairs"] > 0
    assert {im["path"] for im in images} <= set(synthetic["train"])
    for a, b in doc["pairs"]:
        assert a != b and images[a]["pid"] == images[b]["pid"]
    assert doc["counts"]["usable_poses"] + doc["counts"]["unusable_poses"] == len(synthetic["train"])

    fakes = chunks(entries["generate-poseguided"])
    real = chunks(entries["ingest"])
    n_train = int((real["split"] == "train").sum())
    assert len(fakes["path"]) == 3 * n_train  # every train image in each of the k = 3 canonical poses
    assert set(fakes["target_kind"]) == {"canonical"} and sorted(set(fakes["target_pose"])) == [0, 1, 2]
    assert (fakes["target_record"] == -1).all() and set(fakes["target_path"]) == {""}
    by_path = {p: i for i, p in enumerate(real["path"])}
    for origin, rec, pid, cam in zip(fakes["origin_path"], fakes["origin_record"], fakes["pid"], fakes["camid"]):
        i = by_path[origin]
        assert real["split"][i] == "train" and real["pid"][i] == pid and real["camid"][i] == cam
        assert real["record_index"][i] == rec
    assert set(fakes["gen_checksum"]) == {meta["checksum"]}
    canon = json.loads((entries["cluster-poses"] / "canonical_poses.json").read_text())
    # target keypoints are the canonical pose moved from its 64 x 32 frame into the 32 x 16 fake
    kp0 = np.asarray(canon["keypoints"][0], np.float32)
    row = int(np.flatnonzero(fakes["target_pose"] == 0)[0])
    assert np.allclose(fakes["target_keypoints"][row][:, :2], (kp0[:, :2] + 0.5) / 2 - 0.5, atol=1e-4)

    h5 = entries["export-hdf5"] / "dataset.h5"
    assert verify(h5) == []
    with open_h5(h5) as f:
        m = f.meta("train")
        fake = m.is_fake
        assert fake.sum() == len(fakes["path"]) and (~fake).sum() == n_train
        assert {m.source_name(i) for i in np.flatnonzero(fake)} == {"pose"}
        assert sorted(set(m.gen_pose_id[fake].tolist())) == [0, 1, 2] and (m.gen_pose_id[~fake] == -1).all()
        origin = m.origin[fake]
        assert (~m.is_fake[origin]).all() and (m.pid[origin] == m.pid[fake]).all()
        assert {m.label_scheme_names[int(c)] for c in m.label_scheme[fake]} == {"lsro"}
        dense = f.targets("train", np.flatnonzero(fake)[:4])
        assert np.allclose(dense, 1.0 / f.info.num_classes, atol=1e-3)
        # the fake's keypoints are its target pose, resized with the image (32 x 16 -> 64 x 32) by the
        # pixel-centre rule
        stored = m.keypoints[fake][np.asarray(m.path)[fake].tolist().index(fakes["path"][row])]
        assert np.allclose(stored[:, :2], (fakes["target_keypoints"][row][:, :2] + 0.5) * 2 - 0.5, atol=1e-3)


def test_a_pipeline_without_poseguided_keeps_its_keys(pg2_run):
    """export-hdf5 and assign-labels gained a slot: unbound, it stays out of their keys."""
    material = pg2_run["graph"].material
    assert "poseguided" in material["export-hdf5"]["inputs"]
    text = (pg2_run["tmp"] / "p.yaml").read_text()
    graph = build_graph(load_pipeline(_write(pg2_run["tmp"], text.replace("poseguided: generate-poseguided.fakes, ", "")
                                             .replace("schemes: {poseguided: lsro}", "schemes: {}")
                                             .replace("inputs: {poseguided: generate-poseguided.fakes}", "inputs: {}"),
                                             "plain.yaml")), STAGES)
    assert "poseguided" not in graph.material["export-hdf5"]["inputs"]
    assert "poseguided" not in graph.material["assign-labels"]["inputs"]
    assert graph.material["assign-labels"]["params"]["schemes"] == {"real": "onehot", "camstyle": "lsr"}


def _write(folder: Path, text: str, name: str) -> Path:
    p = folder / name
    p.write_text(text)
    return p


def test_deformable_sampled_and_listed_targets_drop_weak_poses_and_count_them(synthetic, tmp_path):
    kp = synthetic["keypoints"]
    confident = {rel: int((kp[rel][:, 2] > 0.3).sum()) for rel in synthetic["train"]}
    cut = int(np.median(list(confident.values()))) + 1  # about half the train poses fall below it
    listed = [synthetic["train"][0], synthetic["train"][7]]
    train = TRAIN.replace("model: pg2,", "model: deformable, d_layers: 2,")
    extra = ("generate-list:\n  uses: generate-poseguided\n"
             f"  params: {{targets: list, pose_list: {json.dumps(listed)}, min_target_keypoints: 0}}\n")
    text = pipeline(synthetic, train, f"{{targets: sampled, num_poses: 3, seed: 1, min_target_keypoints: {cut}}}",
                    cluster=False, extra=extra)
    entries, _ = run(tmp_path, text)
    assert [p.name for p in (entries["train-posegan"] / "models").glob("*.pt")] == ["deformable.pt"]
    n_train = len(synthetic["train"])

    fakes = chunks(entries["generate-poseguided"])
    meta = summary(entries["generate-poseguided"])
    assert meta["dropped"] > 0 and meta["dropped_per_kind"] == {"sampled": meta["dropped"]}
    assert len(fakes["path"]) + meta["dropped"] == 3 * n_train  # drawn = kept + dropped, nothing lost
    assert f"dropped {meta['dropped']} whose target pose has < {cut} keypoints" in " ".join(meta["report"])
    assert set(fakes["target_kind"]) == {"sampled"} and (fakes["target_pose"] == -1).all()
    assert (fakes["target_path"] != fakes["origin_path"]).all()  # never the image's own pose
    assert {str(t) for t in fakes["target_path"]} <= set(synthetic["train"])
    assert all(confident[str(t)] >= cut for t in fakes["target_path"])
    assert len(set(zip(fakes["origin_path"], fakes["target_path"]))) == len(fakes["path"])  # no repeats
    assert len(set(fakes["path"])) == len(fakes["path"])
    assert set(fakes["gen_checksum"]) == {summary(entries["train-posegan"])["checksum"]}

    listed_fakes = chunks(entries["generate-list"])
    assert len(listed_fakes["path"]) == 2 * n_train - 2  # each listed pose, but not an image's own
    assert set(listed_fakes["target_path"]) == set(listed)
    with open_h5(entries["export-hdf5"] / "dataset.h5") as f:
        assert f.meta("train").is_fake.sum() == len(fakes["path"])


@pytest.mark.parametrize("model", ["pg2", "deformable"])
def test_resumed_training_ends_identical_to_an_uninterrupted_one(tmp_path, model):
    """Stopped right after a checkpoint (PG2: in stage I, so resume crosses into stage II) and
    resumed: the same generator weights and the same loss log bytes."""
    from reidaug.gen.common import pick_device
    from reidaug.gen.poseguided import PoseImages, TrainSettings, make_pairs, train_model

    rng = np.random.default_rng(0)
    n = 6
    base = np.array([[8, 4], [9, 3], [7, 3], [10, 4], [6, 4], [11, 8], [5, 8], [12, 13], [4, 13], [12, 17],
                     [4, 17], [10, 18], [6, 18], [10, 24], [6, 24], [10, 30], [6, 30]], np.float32)
    kp = np.concatenate([base[None] + rng.normal(0, 1.5, (n, 17, 2)), np.ones((n, 17, 1))], -1).astype(np.float32)
    data = PoseImages(images=rng.integers(0, 255, (n, 32, 16, 3), dtype=np.uint8), keypoints=kp,
                      confident=np.full(n, 17), paths=[f"x/{i}.jpg" for i in range(n)],
                      pids=np.array([1, 1, 1, 2, 2, 2]), camids=np.zeros(n, np.int64), records=np.arange(n))
    pairs = make_pairs(data, 8, 0.0, 32).pairs
    assert len(pairs) == 12
    hp = dict(image_height=32, image_width=16, ngf=4, ndf=4, d_layers=2)
    settings = TrainSettings(iterations=8, iterations_g1=5 if model == "pg2" else 0, train_batch=2,
                             checkpoint_every=2, sample_every=100, log_every=1)
    cpu = pick_device("cpu", "test")
    straight = train_model(model, data, pairs, hp, settings, tmp_path / "a", tmp_path / "a.pt", cpu)
    with pytest.raises(KeyboardInterrupt):
        train_model(model, data, pairs, hp, settings, tmp_path / "b", tmp_path / "b.pt", cpu,
                    should_stop=lambda s: s == 4)
    assert not (tmp_path / "b.pt").exists()
    resumed = train_model(model, data, pairs, hp, settings, tmp_path / "b", tmp_path / "b.pt", cpu)
    assert resumed.resumed_from == 4 and straight.resumed_from is None
    assert resumed.checksum == straight.checksum
    assert (tmp_path / "a" / "losses.jsonl").read_bytes() == (tmp_path / "b" / "losses.jsonl").read_bytes()


def test_generate_resumes_only_the_missing_chunk_with_identical_bytes(pg2_run, tmp_path):
    """A generate-poseguided run killed after some chunks: the re-run computes only the missing
    chunk, and every chunk file comes out byte for byte as the first time (timings live in
    meta.json's chunk_stats, not in the chunks)."""
    ws = tmp_path / "ws"
    shutil.copytree(pg2_run["ws"], ws)
    entry = Path(str(pg2_run["entries"]["generate-poseguided"]).replace(str(pg2_run["ws"]), str(ws)))
    def contents(folder: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(folder.glob("*.h5"))}

    originals = contents(entry / "chunks")
    assert len(originals) == 3
    partial = entry.with_name(entry.name + ".partial")
    entry.rename(partial)  # as a killed run leaves it: no meta.json, chunk 1 never written
    (partial / "meta.json").unlink()
    (partial / "chunks" / "00001.h5").unlink()
    kept = (partial / "chunks" / "00000.h5").stat().st_mtime_ns
    entries, _ = run(pg2_run["tmp"], pipeline_text(pg2_run), ws)
    chunk_dir = entries["generate-poseguided"] / "chunks"
    assert contents(chunk_dir) == originals
    assert (chunk_dir / "00000.h5").stat().st_mtime_ns == kept  # not recomputed
    meta = json.loads((entries["generate-poseguided"] / "meta.json").read_text())
    stats = meta["chunk_stats"]
    # the recomputed chunk's run record (the others' went with the meta.json this test deleted)
    assert len(stats) == 3 and stats[1]["seconds"]["wall"] > 0 and stats[1]["device"] == "cpu"
    assert not (entries["generate-poseguided"] / "stats").exists()  # folded into meta.json


def pipeline_text(pg2_run) -> str:
    return (pg2_run["tmp"] / "p.yaml").read_text()


@pytest.mark.parametrize("old, new, words", [
    ("model: pg2,", "model: pg3,", r"\.model: expected 'pg2' or 'deformable'; found 'pg3'"),
    ("image_height: 32,", "image_height: 50,",
     r"image_height x image_width = 50 x 16 does not fit model pg2.*multiples of 4"),
    ("model: pg2,", "model: deformable,",
     r"32 x 16 does not fit model deformable.*d_layers=3 needs both sides >= 3 \* 2\^3 = 24 \(d_layers: 2 fits"),
    ("ngf: 4,", "ngf: 4, lambda_nn: 3,", r"lambda_nn is a deformable option, but model is pg2"),
    ("iterations: 6,", "iterations: 6, iterations_g1: 6,", r"iterations_g1 \(6\) must be below iterations \(6\)"),
])
def test_bad_train_params_fail_as_the_yaml_loads(synthetic, tmp_path, old, new, words):
    text = pipeline(synthetic, tail=False).replace(old, new, 1)
    with pytest.raises(ConfigError, match=r"stages\.train-posegan\.params.*" + words):
        build_graph(load_pipeline(_write(tmp_path, text, "p.yaml")), STAGES)


@pytest.mark.parametrize("generate, words", [
    ("{targets: list}", "targets: list needs pose_list"),
    ("{num_poses: 3}", "num_poses is for targets: sampled, but targets is canonical"),
    ("{targets: sampled, pose_list: [a.jpg]}", "pose_list is for targets: list"),
])
def test_bad_generate_params_fail_as_the_yaml_loads(synthetic, tmp_path, generate, words):
    text = pipeline(synthetic, generate=generate, tail=False)
    with pytest.raises(ConfigError, match=r"stages\.generate-poseguided\.params.*" + words):
        build_graph(load_pipeline(_write(tmp_path, text, "p.yaml")), STAGES)


def test_canonical_targets_without_cluster_poses_say_how_to_add_it(synthetic, pg2_run, tmp_path):
    text = pipeline(synthetic, cluster=False, tail=False)
    with pytest.raises(ConfigError, match=r"targets is 'canonical'.*input `canonical` is not bound.*cluster-poses"):
        run(tmp_path, text, pg2_run["ws"])


def test_an_unknown_pose_list_path_names_the_train_paths(synthetic, pg2_run, tmp_path):
    wrong = synthetic["train"][3].replace("bounding_box_train/", "bounding_box_tran/")
    text = pipeline(synthetic, generate=f"{{targets: list, pose_list: [{wrong}]}}", tail=False)
    with pytest.raises(ConfigError,
                       match=r"params.pose_list names 1 path\(s\) that are not train images.*Did you mean"):
        run(tmp_path, text, pg2_run["ws"])


def test_no_training_pairs_is_a_clear_error_with_the_counts(synthetic, pg2_run, tmp_path):
    text = pipeline(synthetic, TRAIN.replace("log_every: 2", "log_every: 2, min_pose_change: 10"), generate="",
                    tail=False)
    # a DataError in the chunk; the runner reports it as the stage's failure, with the resume command
    with pytest.raises(StageError, match=r"no training pairs.*18 train images of 3 identities.*"
                                         r"90 pairs left out as the same pose \(min_pose_change 10"):
        run(tmp_path, text, pg2_run["ws"])


def test_generate_fakes_for_arbitrary_pairs_from_a_model_file(pg2_run, synthetic):
    """The entry point metric code calls: condition images of any size, their keypoints, and
    target keypoints in any frame."""
    from reidaug.data.images import decode_image
    from reidaug.gen.poseguided import generate_fakes

    model = pg2_run["entries"]["train-posegan"] / "models" / "pg2.pt"
    data = pg2_run["entries"]["demo-data"] / "dataset"
    a, b = synthetic["train"][0], synthetic["train"][4]
    img = decode_image(data / a).rgb  # 64 x 32: the model (32 x 16) gets it resized
    cond_kp, tgt_kp = synthetic["keypoints"][a], synthetic["keypoints"][b]
    out = generate_fakes(model, [img, img], np.stack([cond_kp, cond_kp]), np.stack([tgt_kp, cond_kp]), (64, 32),
                         device="cpu")
    assert out.shape == (2, 32, 16, 3) and out.dtype == np.uint8
    assert not np.array_equal(out[0], out[1])  # the target pose matters
    again = generate_fakes(model, [img], cond_kp[None], tgt_kp[None], [(64, 32)], device="cpu")
    assert np.array_equal(again[0], out[0])
    g1 = generate_fakes(model, [img], cond_kp[None], tgt_kp[None], (64, 32), device="cpu", stage="g1")
    assert g1.shape == (1, 32, 16, 3)


def test_score_posegan_scores_held_out_test_pairs_against_the_real_target(synthetic, tmp_path, shared_dir):
    from reidaug.eval.generation import mask_ssim, ssim
    from reidaug.pose.representations import body_mask

    judge = shared_dir / "models" / "osnet_x0_25_msmt17.onnx"
    if not judge.exists():
        pytest.skip(f"no judge model at {judge}")
    text = pipeline(synthetic, generate="", tail=False, cluster=False,
                    extra=f"score-posegan: {{params: {{judge: {judge}, num_pairs: 40, grid_pairs: 5, "
                          f"min_keypoints: 8}}}}\n")
    entries, _ = run(tmp_path, text)
    out = entries["score-posegan"]
    m = json.loads((out / "metrics.json").read_text())
    doc = json.loads((out / "pairs.json").read_text())
    # held-out: only test identities (query/gallery), none of the train ones; pairs of one person
    test_ids = {int(p.rsplit("/", 1)[-1][:4]) for p in synthetic["keypoints"] if not p.startswith("bounding_box_train")}
    train_ids = {int(p.rsplit("/", 1)[-1][:4]) for p in synthetic["train"]}
    assert {im["pid"] for im in doc["images"]} <= test_ids and not ({im["pid"] for im in doc["images"]} & train_ids)
    assert 0 < len(doc["pairs"]) == m["pairs"]["counts"]["pairs"] <= 40
    assert all(doc["images"][a]["pid"] == doc["images"][b]["pid"] for a, b in doc["pairs"])
    # the baseline (copy the condition) recomputed independently from the ingest images
    import cv2

    from reidaug.data.images import decode_stored

    real = chunks(entries["ingest"])
    by_path = {p: i for i, p in enumerate(real["path"])}

    def img(rel):
        return cv2.resize(decode_stored(real["image"][by_path[rel]]), (16, 32), interpolation=cv2.INTER_LINEAR)

    cond = np.stack([img(doc["images"][a]["path"]) for a, _ in doc["pairs"]])
    tgt = np.stack([img(doc["images"][b]["path"]) for _, b in doc["pairs"]])
    assert m["ssim"]["baseline"]["mean"] == pytest.approx(float(np.mean(ssim(cond, tgt))), abs=1e-6)
    kp = np.stack([synthetic["keypoints"][doc["images"][b]["path"]] for _, b in doc["pairs"]])
    kp[..., :2] = (kp[..., :2] + 0.5) / 2 - 0.5  # 64 x 32 -> the model's 32 x 16 frame
    masks = body_mask(kp, (32, 16), threshold=0.3)
    assert m["ssim"]["mask_baseline"]["mean"] == pytest.approx(float(np.mean(mask_ssim(cond, tgt, masks))), abs=0.02)
    assert -1 <= m["ssim"]["fakes"]["mean"] <= 1 and "ssim_g1" in m  # PG2: G1 scored too
    assert 0 <= m["identity"]["fakes"]["rank1"] <= 1 and m["identity"]["baseline"]["rank1"] > 0
    assert set(m["freid"]) <= {"0", "1"}
    assert m["generator"]["model"] == "pg2"
    table = (out / "metrics.md").read_text()
    assert "Held-out pose transfer" in table and "mask-SSIM" in table
    assert (out / "pairs.png").stat().st_size > 1000


def test_score_posegan_scores_against_the_renderers_exact_truth(synthetic, tmp_path):
    """Bound to the synthetic dataset, each fake (A's person in B's pose) is also scored against
    the renderer's picture of exactly that: B's pose through A's camera. For a pair within one
    camera that truth is B itself (real target scores 1); across cameras it is B re-rendered
    under A's camera, from gt_camstyle/."""
    import cv2

    from reidaug.data.images import decode_image
    from reidaug.eval.generation import ssim

    text = pipeline(synthetic, generate="", tail=False, cluster=False,
                    extra="score-posegan: {params: {num_pairs: 40, grid_pairs: 0, min_keypoints: 8}, "
                          "inputs: {synthetic: demo-data.dataset}}\n")
    entries, _ = run(tmp_path, text)
    m = json.loads((entries["score-posegan"] / "metrics.json").read_text())
    doc = json.loads((entries["score-posegan"] / "pairs.json").read_text())
    t = m["synthetic_truth"]
    assert t["pairs"] == len(doc["pairs"]) > 0 and {"fakes", "g1", "baseline", "real_target"} <= set(t)
    root = entries["demo-data"] / "dataset"

    def rsz(im):
        return cv2.resize(im, (16, 32), interpolation=cv2.INTER_LINEAR)

    truth, cond, real, same = [], [], [], 0
    for a, b in doc["pairs"]:
        ia, ib = doc["images"][a], doc["images"][b]
        name = ib["path"].rsplit("/", 1)[-1]
        gt = root / ib["path"] if ia["camid"] == ib["camid"] else root / "gt_camstyle" / str(ia["camid"] + 1) / name
        same += ia["camid"] == ib["camid"]
        truth.append(rsz(decode_image(gt).rgb))
        cond.append(rsz(decode_image(root / ia["path"]).rgb))
        real.append(rsz(decode_image(root / ib["path"]).rgb))
    truth, cond, real = np.stack(truth), np.stack(cond), np.stack(real)
    assert 0 < same < len(doc["pairs"])  # both kinds of pair are exercised
    per_pair = ssim(real, truth)
    assert np.allclose(per_pair[[doc["images"][a]["camid"] == doc["images"][b]["camid"] for a, b in doc["pairs"]]], 1.0)
    assert t["real_target"]["ssim"] == pytest.approx(float(np.mean(per_pair)), abs=1e-6)
    assert t["real_target"]["ssim"] < 1
    assert t["baseline"]["ssim"] == pytest.approx(float(np.mean(ssim(cond, truth))), abs=1e-6)
    assert -1 <= t["fakes"]["ssim"] <= 1 and -1 <= t["g1"]["mask_ssim"] <= 1
    assert "exact truth" in (entries["score-posegan"] / "metrics.md").read_text()


def test_fakes_of_folder_datasets_that_repeat_file_names_keep_their_own_labels(synthetic, tmp_path):
    """A folder dataset names images 0.jpg, 1.jpg, ... inside every identity folder: each fake
    still has its own name, so assign-labels' targets reach the right fakes in export-hdf5
    (named by file name alone, the fakes of 0002/0.jpg and 0003/0.jpg were one name, and one
    identity's targets overwrote the other's)."""
    from reidaug.pose.openpose import write_openpose_csv

    root = tmp_path / "folder"
    by_id: dict[int, list[str]] = {}
    for rel in synthetic["train"]:
        by_id.setdefault(int(rel.rsplit("/", 1)[-1][:4]), []).append(rel)
    source = tmp_path / "source"
    from reidaug.data.synthetic import SyntheticSpec, write_dataset

    write_dataset(source, SyntheticSpec(**DEMO))
    poses = {}
    for pid, rels in sorted(by_id.items()):
        (root / f"{pid:04d}").mkdir(parents=True)
        for k, rel in enumerate(sorted(rels)):
            shutil.copyfile(source / rel, root / f"{pid:04d}" / f"{k}.jpg")
            poses.setdefault(f"{k}.jpg", synthetic["keypoints"][rel])  # the CSV goes by file name
    write_openpose_csv(tmp_path / "poses.csv", poses)
    listed = f"{min(by_id):04d}/1.jpg"  # every image in this one pose: fakes <id>/<k>_pose<record>
    text = pipeline(synthetic, generate=f"{{targets: list, pose_list: [{listed}], min_target_keypoints: 0}}",
                    cluster=False).replace(
        "ingest: {params: {format: market1501, chunk_size: 16}, inputs: {source: demo-data.dataset}}",
        f"ingest: {{params: {{format: folder, root: {root}, chunk_size: 16}}}}").replace(
        str(synthetic["csv"]), str(tmp_path / "poses.csv")).replace(
        "schemes: {poseguided: lsro}", "schemes: {poseguided: lsr}")
    text = "\n".join(line for line in text.splitlines() if not line.strip().startswith("demo-data:")) + "\n"
    entries, _ = run(tmp_path, text)
    fakes = chunks(entries["generate-poseguided"])
    assert len(set(fakes["path"])) == len(fakes["path"]) == len(synthetic["train"]) - 1
    with open_h5(entries["export-hdf5"] / "dataset.h5") as f:
        m = f.meta("train")
        rows = np.flatnonzero(m.is_fake)
        dense = f.targets("train", rows)
        assert (dense.argmax(1) == m.label[rows]).all()  # lsr: the peak is the fake's own identity


def test_a_threshold_set_on_the_stage_is_the_one_the_generator_draws_poses_with(pg2_run, synthetic, tmp_path,
                                                                                 monkeypatch):
    """generate-poseguided drops and records target poses at its score_threshold, score-posegan
    picks pairs and masks at its own: the generator must see those very poses, not re-cut them
    at its training threshold (a recorded keypoint it never drew, or one it drew unrecorded)."""
    from reidaug.gen.poseguided import PoseGuidedGenerator, clean_keypoints

    gen = PoseGuidedGenerator(pg2_run["entries"]["train-posegan"] / "models" / "pg2.pt", pick_cpu())
    assert gen.score_threshold == pytest.approx(0.3)
    rng = np.random.default_rng(0)
    kp = np.asarray(synthetic["keypoints"][synthetic["train"][0]], np.float32)[None] / 2  # 64 x 32 -> ~32 x 16
    kp[..., 2] = np.where(kp[..., 2] > 0, rng.choice([0.4, 0.9], 17), 0)  # some keypoints between 0.3 and 0.5
    img = rng.integers(0, 255, (1, 32, 16, 3), dtype=np.uint8)

    def at(t):
        return gen.generate(img, clean_keypoints(kp, t), clean_keypoints(kp, t))

    assert np.array_equal(gen.generate(img, kp, kp, threshold=0.5), at(0.5))
    assert not np.array_equal(at(0.5), at(0.3))

    seen: list = []
    original = PoseGuidedGenerator.generate_tensor

    def spy(self, x, cond_kp, target_kp, stage="final", threshold=None):
        seen.append(threshold)
        return original(self, x, cond_kp, target_kp, stage, threshold)

    monkeypatch.setattr(PoseGuidedGenerator, "generate_tensor", spy)
    text = pipeline(synthetic, generate="{batch_size: 5, score_threshold: 0.7}", tail=False,
                    extra="score-posegan: {params: {num_pairs: 4, grid_pairs: 0, score_threshold: 0.7, "
                          "min_keypoints: 0}}\n")
    run(tmp_path, text, pg2_run["ws"])
    assert seen and set(seen) == {0.7}


def pick_cpu():
    from reidaug.gen.common import pick_device

    return pick_device("cpu", "test")


@pytest.mark.parametrize("fmt, pairs, left_out", [("msmt17", {0, 5}, 0), ("market1501", {5}, 3)])
def test_held_out_identity_0_is_a_person_except_market_distractors(synthetic, fmt, pairs, left_out):
    """MSMT17 and folder datasets number people from 0: score-posegan scores their identity 0;
    only Market-1501's 0 (its distractors) is left out, and counted."""
    from types import SimpleNamespace

    from reidaug.data.images import encode_png
    from reidaug.stages.score_posegan import ScorePoseGANParams, held_out_pairs

    rels = synthetic["train"][:6]
    rng = np.random.default_rng(0)
    arrays = {"path": rels, "split": ["query", "gallery", "gallery"] * 2, "pid": np.array([0, 0, 0, 5, 5, 5]),
              "camid": np.array([0, 1, 1, 0, 1, 1]), "record_index": np.arange(6),
              "image": [encode_png(rng.integers(0, 255, (64, 32, 3), dtype=np.uint8)) for _ in rels]}
    poses = {"path": rels, "keypoints": np.stack([synthetic["keypoints"][r] for r in rels])}
    handles = {"dataset": SimpleNamespace(iter_chunks=lambda: iter([(arrays, {})]), meta={"params": {"format": fmt}},
                                          path=Path("ingest")),
               "keypoints": SimpleNamespace(iter_chunks=lambda: iter([(poses, {})]))}
    ctx = SimpleNamespace(params=ScorePoseGANParams(min_keypoints=0, min_pose_change=0), stage="score",
                          input=lambda slot: handles[slot])
    data, plan_ = held_out_pairs(ctx, (32, 16), 0.3)
    assert {int(data.pids[a]) for a, _ in plan_.pairs} == pairs
    assert plan_.counts["distractors_left_out"] == left_out


def test_score_posegan_splits_are_held_out_ones(synthetic, tmp_path):
    text = pipeline(synthetic, generate="", tail=False, cluster=False,
                    extra="score-posegan: {params: {splits: [query, train]}}\n")
    with pytest.raises(ConfigError, match=r"stages\.score-posegan\.params\.splits.*'query' or 'gallery'.*'train'"):
        build_graph(load_pipeline(_write(tmp_path, text, "p.yaml")), STAGES)


def test_pose_fusion_reports_unfused_max_and_mean_with_one_model(tmp_path, synthetic):
    extra = (tiny_reid("export-hdf5.hdf5", evaluation=True)
             + "evaluate-posefusion: {params: {batch_size: 8, pictures: 2, threads: 1}}\n")
    entries, _ = run(tmp_path, pipeline(synthetic, extra=extra))
    e = entries["evaluate-posefusion"]
    m = json.loads((e / "metrics.json").read_text())
    assert m["k"] == 3 and set(m["fusions"]) == {"none", "max", "mean"}
    for fusion in m["fusions"].values():
        assert 0 <= fusion["mAP"] <= 1 and 0 <= fusion["rank1"] <= 1
    # the unfused row is the model's own evaluation: image_features computes what extract_features does
    own = json.loads((entries["train-reid"] / "run" / "metrics.json").read_text())
    assert m["fusions"]["none"]["mAP"] == pytest.approx(own["mAP"], abs=1e-4)
    assert m["fusions"]["none"]["rank1"] == pytest.approx(own["rank1"], abs=1e-6)
    # the pose views do change the features (with 12 queries the metrics alone may tie)
    import torch

    from reidaug.gen.posefusion import canonical_in_frame, fused_features
    from reidaug.gen.poseguided import PoseGuidedGenerator
    from reidaug.stages.evaluate_posefusion import _split
    from reidaug.train.model import load_model

    gen = PoseGuidedGenerator.from_folder(entries["train-posegan"] / "models", torch.device("cpu"))
    poses = canonical_in_frame(json.loads((entries["cluster-poses"] / "canonical_poses.json").read_text()), gen.size)
    images, kp, _, _ = _split(entries["export-hdf5"] / "dataset.h5", "query")
    f = fused_features(load_model(entries["train-reid"] / "run"), gen, images[:5], kp[:5], poses, batch_size=4,
                       keep_pictures=2).features
    assert np.abs(f["max"] - f["none"]).max() > 1e-3 and np.abs(f["mean"] - f["none"]).max() > 1e-3
    assert (e / "pose_fusion.png").stat().st_size > 500 and "max over 1 + 3 poses" in (e / "metrics.md").read_text()
    assert "pose fusion (market, cosine" in summary(e)["report"][0]



def test_pose_fusion_with_a_pose_model_joins_the_original_to_the_pooled_pose_views(tmp_path, synthetic):
    """PN-GAN's two models: ``model`` reads the original, ``pose_model`` the k pose views; the fused
    feature is [unit(original) ; unit(pool of the views)] / sqrt 2, and the unfused row is unchanged."""
    extra = (tiny_reid("export-hdf5.hdf5", evaluation=True)
             + tiny_reid("export-hdf5.hdf5", name="reid-pose", seed=1)
             + "evaluate-posefusion: {params: {batch_size: 8, pictures: 2, threads: 1}, "
               "inputs: {pose_model: reid-pose.model}}\n"
             + "fusion-one: {uses: evaluate-posefusion, params: {batch_size: 8, pictures: 2, threads: 1}}\n")
    entries, _ = run(tmp_path, pipeline(synthetic, extra=extra))
    e, one = entries["evaluate-posefusion"], entries["fusion-one"]
    m = json.loads((e / "metrics.json").read_text())
    assert m["pose_model"] is True and "two models" in m["note"]
    assert "pose_model" not in json.loads((one / "metrics.json").read_text())  # one-model records as before
    assert m["fusions"]["none"] == json.loads((one / "metrics.json").read_text())["fusions"]["none"]
    assert "[original ; max over 3 poses, pose model] (PN-GAN)" in (e / "metrics.md").read_text()
    import torch

    import cv2

    from reidaug.gen.posefusion import canonical_in_frame, fused_features
    from reidaug.gen.poseguided import PoseGuidedGenerator
    from reidaug.pose.keypoints import rescale_keypoints
    from reidaug.stages.evaluate_posefusion import _split
    from reidaug.train.features import image_features
    from reidaug.train.model import load_model

    gen = PoseGuidedGenerator.from_folder(entries["train-posegan"] / "models", torch.device("cpu"))
    poses = canonical_in_frame(json.loads((entries["cluster-poses"] / "canonical_poses.json").read_text()), gen.size)
    images, kp, _, _ = _split(entries["export-hdf5"] / "dataset.h5", "query")
    model, pose_model = load_model(entries["train-reid"] / "run"), load_model(entries["reid-pose"] / "run")
    r = fused_features(model, gen, images[:5], kp[:5], poses, batch_size=8, pose_model=pose_model)
    d = r.features["none"].shape[1]
    assert r.features["max"].shape == (5, 2 * d) and r.no_pose == 0
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    np.testing.assert_allclose(r.features["max"][:, :d] * np.sqrt(2), unit(r.features["none"]), atol=1e-5)
    h, w = gen.size  # the pose views by hand: each image re-posed by the generator, read by the pose model
    cond = np.stack([cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR) for im in images[:5]])
    cond_kp = np.stack([rescale_keypoints(k_, im.shape[:2], (h, w)) for k_, im in zip(kp[:5], images[:5])])
    views = np.stack([image_features(pose_model, list(gen.generate(cond, cond_kp, np.repeat(p[None], 5, 0))),
                                     batch_size=8) for p in poses])
    np.testing.assert_allclose(r.features["max"][:, d:] * np.sqrt(2), unit(views.max(0)), atol=1e-4)
    np.testing.assert_allclose(r.features["mean"][:, d:] * np.sqrt(2), unit(views.mean(0)), atol=1e-4)
    stage = read_h5_chunk(sorted((e / "chunks").glob("*.h5"))[0])[0]  # the stage computed the same
    np.testing.assert_allclose(stage["feat_max"][:5], r.features["max"], atol=1e-4)
    # no image re-posable (18 of 17 keypoints): the pose half is the pose model's feature of the original
    r = fused_features(model, gen, images[:5], kp[:5], poses, batch_size=8, pose_model=pose_model, min_keypoints=18)
    assert r.no_pose == 5
    own = unit(image_features(pose_model, images[:5], batch_size=8))
    for fusion in ("max", "mean"):
        np.testing.assert_allclose(r.features[fusion][:, d:] * np.sqrt(2), own, atol=1e-5)

def test_pose_fusion_without_keypoints_in_the_file_is_a_clear_error(tmp_path, synthetic):
    text = pipeline(synthetic, extra=(
        "export-real: {uses: export-hdf5, params: {sets: [real], image_height: 64, image_width: 32}}\n"
        + tiny_reid("export-real.hdf5")
        + "evaluate-posefusion: {params: {batch_size: 8, threads: 1}, inputs: {data: export-real.hdf5}}\n"))
    # found while planning, before any image is generated
    with pytest.raises(DataError, match="planning.*split 'query' has no keypoints.*inputs.keypoints to "
                                        "extract-pose.keypoints"):
        run(tmp_path, text)


def test_pose_fusion_resumes_only_the_missing_chunk_with_identical_results(tmp_path, synthetic):
    """evaluate-posefusion in chunks of 4 images (6 queries and 12 gallery images: 2 + 3 chunks) gives
    the features of one chunk per split; killed with two chunks missing, the re-run computes only those,
    the kept chunk files are not rewritten, and chunks and metrics come out byte for byte as before."""
    extra = (tiny_reid("export-hdf5.hdf5", evaluation=True)
             + "evaluate-posefusion: {params: {batch_size: 4, pictures: 2, threads: 1, chunk_size: 4}}\n"
             "fusion-whole: {uses: evaluate-posefusion, params: {batch_size: 4, pictures: 2, threads: 1}}\n")
    text = pipeline(synthetic, extra=extra)
    entries, _ = run(tmp_path, text)
    entry, whole = entries["evaluate-posefusion"], entries["fusion-whole"]
    parts = [read_h5_chunk(p) for p in sorted((entry / "chunks").glob("*.h5"))]
    assert [(a["split"], a["start"], a["stop"]) for _, a in parts] == [
        ("query", 0, 4), ("query", 4, 6), ("gallery", 0, 4), ("gallery", 4, 8), ("gallery", 8, 12)]
    assert parts[0][0]["pictures"].shape[:2] == (2, 4) and "pictures" not in parts[1][0]
    one = [read_h5_chunk(p)[0] for p in sorted((whole / "chunks").glob("*.h5"))]
    for name in ("feat_none", "feat_max", "feat_mean", "pid", "camid"):  # split into chunks, joined in order
        for split, single in zip((parts[:2], parts[2:]), one):
            np.testing.assert_allclose(np.concatenate([c[name] for c, _ in split]), single[name], atol=1e-5)
    chunked, single = (json.loads((e / "metrics.json").read_text())["fusions"] for e in (entry, whole))
    for fusion in ("none", "max", "mean"):
        assert chunked[fusion] == pytest.approx(single[fusion])

    files = {p.relative_to(entry).as_posix(): p.read_bytes()
             for p in [entry / "metrics.json", entry / "metrics.md", entry / "pose_fusion.png",
                       *sorted((entry / "chunks").glob("*.h5"))]}
    partial = entry.with_name(entry.name + ".partial")
    entry.rename(partial)  # as a killed run leaves it: no meta.json, no metrics, two chunks never written
    for name in ("meta.json", "metrics.json", "metrics.md", "pose_fusion.png", "chunks/00000.h5", "chunks/00004.h5"):
        (partial / name).unlink()  # chunk 0 holds the pictures
    kept = (partial / "chunks" / "00001.h5").stat().st_mtime_ns
    entries, _ = run(tmp_path, text)
    again = entries["evaluate-posefusion"]
    assert again == entry and (again / "chunks" / "00001.h5").stat().st_mtime_ns == kept
    assert {name: (again / name).read_bytes() for name in files} == files


def test_pose_fusion_refuses_a_file_without_query_or_with_letterboxed_images(tmp_path, synthetic):
    """Found while planning, before any image is generated: a file without a query split (one exported for
    training), and one whose images are letterboxed (the generator trained on stretched ones)."""
    reid = tiny_reid("export-hdf5.hdf5")
    fusion = "evaluate-posefusion: {params: {batch_size: 4, threads: 1}, inputs: {data: export-eval.hdf5}}\n"
    export = ("export-eval: {uses: export-hdf5, params: {image_height: 64, image_width: 32, %s}, "
              "inputs: {keypoints: extract-pose.keypoints}}\n")
    ws = tmp_path / "ws"
    with pytest.raises(DataError, match=r"planning.*split 'query' is missing \(splits: train, gallery\).*Fix: bind "
                                        "data to an export-hdf5 stage that writes the query and gallery splits"):
        run(tmp_path, pipeline(synthetic, extra=reid + export % "splits: [train, gallery]" + fusion), ws)
    with pytest.raises(DataError, match=r"planning.*letterboxed \(export-hdf5 resize: pad\).*Fix: evaluate on an "
                                        "export with resize: stretch"):
        run(tmp_path, pipeline(synthetic, extra=reid + export % "resize: pad" + fusion), ws)


def test_pose_fusion_refuses_a_generator_from_another_ingest(tmp_path, synthetic):
    extra = (
        "ingest-b: {uses: ingest, params: {format: market1501, chunk_size: 8}, inputs: {source: demo-data.dataset}}\n"
        f"extract-pose-b: {{uses: extract-pose, params: {{backend: openpose-csv, annotations: {synthetic['csv']}}}, "
        "inputs: {dataset: ingest-b.dataset}}\n"
        "export-b: {uses: export-hdf5, params: {sets: [real], image_height: 64, image_width: 32}, "
        "inputs: {dataset: ingest-b.dataset, keypoints: extract-pose-b.keypoints}}\n"
        + tiny_reid("export-b.hdf5")
        + "evaluate-posefusion: {params: {batch_size: 8, threads: 1}, inputs: {data: export-b.hdf5}}\n")
    with pytest.raises(ConfigError, match="different ingest outputs.*may have trained on identities"):
        run(tmp_path, pipeline(synthetic, generate="", tail=False, extra=extra))


def test_pose_fusion_refuses_a_pose_model_trained_on_another_ingest(tmp_path, synthetic):
    """PN-GAN's pose model must not have seen the test identities: one trained on an export of another ingest
    (another split, for all the stage knows) is refused while planning."""
    extra = (
        "ingest-b: {uses: ingest, params: {format: market1501, chunk_size: 8}, inputs: {source: demo-data.dataset}}\n"
        "export-b: {uses: export-hdf5, params: {sets: [real], image_height: 64, image_width: 32}, "
        "inputs: {dataset: ingest-b.dataset}}\n"
        + tiny_reid("export-hdf5.hdf5", evaluation=True)
        + tiny_reid("export-b.hdf5", name="reid-b")
        + "evaluate-posefusion: {params: {batch_size: 8, threads: 1}, inputs: {pose_model: reid-b.model}}\n")
    with pytest.raises(ConfigError, match=r"pose model \(reid-b\) trained on a file that does not come from this "
                                          r"file's ingest.*Fix"):
        run(tmp_path, pipeline(synthetic, extra=extra))
