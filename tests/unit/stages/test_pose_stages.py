"""extract-pose and cluster-poses through the runner: real backends on synthetic and real crops."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from reidaug.errors import ConfigError
from reidaug.pipeline.config import load_pipeline
from reidaug.pipeline.context import read_h5_chunk
from reidaug.pipeline.graph import build_graph
from reidaug.pipeline.runner import RunOptions, run_pipeline
from reidaug.stages import STAGES

pytest.importorskip("mediapipe", reason="pose backends not installed: run scripts/install_pose.sh .venv/bin/python")


def run_yaml(tmp_path: Path, text: str):
    p = tmp_path / "p.yaml"
    p.write_text(textwrap.dedent(text))
    graph = build_graph(load_pipeline(p), STAGES)
    report = run_pipeline(graph, tmp_path / "ws", options=RunOptions(workers=2))
    return {r.name: r.entry for r in report.results}


def on_demo(num_ids: int, per_cam: int, rest: str, ingest: str = "{format: market1501}") -> str:
    """A pipeline on demo-data's synthetic people, ingested; ``rest`` lists the stages after ingest."""
    return (f"name: t\nstages:\n  demo-data: {{params: {{num_ids: {num_ids}, images_per_id_per_cam: {per_cam}}}}}\n"
            f"  ingest: {{params: {ingest}, inputs: {{source: demo-data.dataset}}}}\n"
            + textwrap.indent(textwrap.dedent(rest), "  "))


def keypoints_of(entry: Path):
    chunks = [read_h5_chunk(p)[0] for p in sorted((entry / "chunks").glob("*.h5"))]
    return {k: np.concatenate([c[k] for c in chunks]) for k in ("keypoints", "height", "width", "split")}


def test_mediapipe_on_synthetic_people_then_canonical_poses(tmp_path):
    entries = run_yaml(tmp_path, on_demo(8, 3, """\
        extract-pose: {params: {backend: mediapipe, upscale_height: 256, batch_size: 8}}
        cluster-poses: {params: {k: 3, min_confident: 8}}
        """, ingest="{format: market1501, chunk_size: 16}"))
    kp = keypoints_of(entries["extract-pose"])
    n = len(kp["keypoints"])
    assert n == 48 and kp["keypoints"].shape == (48, 17, 3)
    found = kp["keypoints"][..., 2].max(axis=1) > 0
    assert found.mean() > 0.5  # BlazePose finds most drawn people
    xy = kp["keypoints"][found][..., :2]
    assert (xy[..., 0] <= kp["width"][found, None]).all() and (xy[..., 1] <= kp["height"][found, None]).all()
    meta = json.loads((entries["extract-pose"] / "meta.json").read_text())["summary"]
    assert meta["no_person"] == int((~found).sum())  # counted, not dropped
    canon = json.loads((entries["cluster-poses"] / "canonical_poses.json").read_text())
    assert canon["k"] == 3 and np.asarray(canon["keypoints"]).shape == (3, 17, 3)
    assert sum(canon["cluster_sizes"]) + canon["excluded"] + canon["outliers"] == 24  # the train split
    assert min(canon["cluster_sizes"]) >= 3  # min_cluster_size's default: no canonical pose of 1 or 2 odd ones
    assert (entries["cluster-poses"] / "canonical_poses.png").stat().st_size > 1000


def test_movenet_on_real_cuhk01_crops(tmp_path, cuhk01_dir, shared_dir):
    model = shared_dir / "models" / "movenet_singlepose_lightning_int8.tflite"
    subset = tmp_path / "cuhk01" / "images"
    subset.mkdir(parents=True)
    for pid in range(1, 11):
        for idx in range(1, 5):
            name = f"{pid:04d}{idx:03d}.png"
            (subset / name).symlink_to(cuhk01_dir / "images" / name)
    entries = run_yaml(tmp_path, f"""\
        name: t
        stages:
          ingest: {{params: {{format: cuhk01, root: {subset.parent}, options: {{num_train_ids: 5}}}}}}
          extract-pose: {{params: {{backend: movenet, model_path: {model}, batch_size: 16}}}}
        """)
    meta = json.loads((entries["extract-pose"] / "meta.json").read_text())["summary"]
    assert meta["images"] == 40
    assert 0.45 <= meta["mean_score"] <= 0.85  # NOTICE.md: 0.58-0.70 on CUHK01
    kp = keypoints_of(entries["extract-pose"])["keypoints"]
    assert (kp[..., 0] <= 60).all() and (kp[..., 1] <= 160).all() and (kp[..., :2] >= 0).all()


def test_backend_options_are_checked_at_load_time(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("name: t\nstages:\n  ingest: {params: {format: market1501, root: .}}\n"
                 "  extract-pose: {params: {backend: movenet}}\n")
    with pytest.raises(ConfigError, match=r"p.yaml:4:.*movenet needs model_path"):
        build_graph(load_pipeline(p), STAGES)
    p.write_text("name: t\nstages:\n  ingest: {params: {format: market1501, root: .}}\n"
                 "  extract-pose: {params: {backend: mmpose, config: rtmpose-t}}\n")
    with pytest.raises(ConfigError, match=r"checkpoint.*OpenMMLab model zoo.*random_init"):
        build_graph(load_pipeline(p), STAGES)


@pytest.mark.parametrize("export", ["{image_height: 128, image_width: 64}",  # the demo's own size: no resize
                                    "{image_height: 64, image_width: 24}",  # stretched: the pixel-centre rule back
                                    "{image_height: 64, image_width: 24, resize: pad}"])  # letterboxed: margins off
def test_openpose_csv_round_trip_through_the_pipeline(tmp_path, export):
    """extract-pose -> export-hdf5 (keypoints moved into the stored frame) -> export-poses (moved back to
    each original image) -> openpose-csv: the same keypoints, up to the CSV's integer coordinates."""
    base = on_demo(6, 2, """\
        extract-pose: {params: %s}
        export-hdf5:
          params: EXPORT
          inputs: {keypoints: extract-pose.keypoints}
        """).replace("EXPORT", export)
    (tmp_path / "a").mkdir()
    first = run_yaml(tmp_path / "a", base % "{backend: mediapipe, upscale_height: 256}")
    csv = tmp_path / "ann.csv"
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "reidaug.cli", "export-poses", str(first["export-hdf5"] / "dataset.h5"),
                          str(csv), "--threshold", "0.3"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    (tmp_path / "b").mkdir()
    second = run_yaml(tmp_path / "b", base % f"{{backend: openpose-csv, annotations: {csv}}}")
    ka, kb = keypoints_of(first["extract-pose"]), keypoints_of(second["extract-pose"])
    a, b = ka["keypoints"], kb["keypoints"]
    train = ka["split"] == "train"  # export-poses wrote the train split
    assert train.sum() == 12 and (b[~train][..., 2] == 0).all()  # other images are not in the CSV
    conf = a[train][..., 2] > 0.3
    assert conf.sum() > 50
    assert np.abs(a[train][conf][:, :2] - b[train][conf][:, :2]).max() <= 0.5 + 1e-4  # integer CSV coordinates
    assert (b[train][~conf][:, 2] == 0).all()  # below the threshold: written as -1, read back as missing


@pytest.mark.mmpose
def test_mmpose_random_init_runs_the_real_code_path_batched(tmp_path):
    pytest.importorskip("mmpose")
    entries = run_yaml(tmp_path, on_demo(2, 2, """\
        extract-pose: {params: {backend: mmpose, config: rtmpose-t, random_init: true, device: cpu, batch_size: 4}}
        """))
    kp = keypoints_of(entries["extract-pose"])
    assert kp["keypoints"].shape == (8, 17, 3)
    xy = kp["keypoints"][..., :2]
    assert (xy >= 0).all() and (xy[..., 0] <= 64).all() and (xy[..., 1] <= 128).all()
