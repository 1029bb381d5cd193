"""generate-colortransfer: the non-GAN camera-style baseline — its maths, the stage into
assign-labels and export-hdf5 through the camstyle slot, and its errors."""
from __future__ import annotations

import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from reidaug.data.h5format import open_h5
from reidaug.data.images import decode_stored
from reidaug.errors import ConfigError
from reidaug.gen.colortransfer import apply_tables, camera_stats, lookup_tables, to_lab
from reidaug.pipeline.config import load_pipeline
from reidaug.pipeline.context import read_h5_chunk
from reidaug.pipeline.graph import build_graph
from reidaug.pipeline.runner import RunOptions, run_pipeline
from reidaug.stages import STAGES


def _tinted(rng, shift):
    img = rng.integers(40, 200, size=(32, 16, 3)).astype(np.int16) + np.asarray(shift, np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("method", ["reinhard", "histogram"])
def test_transfer_moves_source_camera_statistics_onto_the_target(method):
    rng = np.random.default_rng(0)
    warm = [(0, _tinted(rng, (50, 0, -40))) for _ in range(8)]   # camera 0: reddish
    cold = [(1, _tinted(rng, (-40, 0, 50))) for _ in range(8)]   # camera 1: bluish
    stats = camera_stats(warm + cold)
    tables = lookup_tables(stats, 0, 1, method)
    moved = np.concatenate([to_lab(apply_tables(img, tables)).reshape(-1, 3) for _, img in warm]).astype(float)
    mean_t, std_t = stats.mean_std(1)
    mean_s, _ = stats.mean_std(0)
    # the fakes' Lab means land near camera 1's, far from camera 0's (a, b carry the tint; what is
    # left is the RGB gamut clipping of the way back)
    gap = np.linalg.norm((mean_s - mean_t)[1:])
    assert gap > 40.0
    assert np.linalg.norm((moved.mean(0) - mean_t)[1:]) < 0.15 * gap
    assert (np.abs(moved.std(0) - std_t)[1:] < 0.3 * std_t[1:]).all()
    # a monotone map per channel: the order of pixel values (the person's texture) is kept
    assert all((np.diff(tables[c].astype(int)) >= 0).all() for c in range(3))


def test_identity_pair_is_near_identity():
    rng = np.random.default_rng(1)
    imgs = [(0, _tinted(rng, (0, 0, 0))) for _ in range(4)]
    stats = camera_stats(imgs)
    round_trip = apply_tables(imgs[0][1], np.tile(np.arange(256, dtype=np.uint8), (3, 1)))  # Lab there and back
    for method in ("reinhard", "histogram"):
        out = apply_tables(imgs[0][1], lookup_tables(stats, 0, 0, method))
        assert np.array_equal(out, round_trip)


PIPE = """\
    name: ct
    stages:
      demo-data: {params: {num_ids: 6, num_cams: 3, images_per_id_per_cam: 2, height: 64, width: 32}}
      ingest:
        params: {format: market1501, chunk_size: 16}
        inputs: {source: demo-data.dataset}
      generate-colortransfer: {params: PARAMS}
      assign-labels:
        params: {schemes: {camstyle: lsr}, epsilon: 0.2}
        inputs: {camstyle: generate-colortransfer.fakes}
      export-hdf5:
        params: {image_height: 64, image_width: 32}
        inputs: {camstyle: generate-colortransfer.fakes, labels: assign-labels.labels}
"""


def _run(tmp_path: Path, params: str):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(PIPE).replace("PARAMS", params))
    graph = build_graph(load_pipeline(path), STAGES)
    report = run_pipeline(graph, tmp_path / "ws", options=RunOptions(workers=1))
    return {r.name: r.entry for r in report.results}


def _chunks(entry: Path) -> dict[str, np.ndarray]:
    parts = [read_h5_chunk(p)[0] for p in sorted((entry / "chunks").glob("*.h5"))]
    return {k: np.concatenate([np.asarray(c[k]) for c in parts]) for k in parts[0]}


def test_stage_exports_as_the_camstyle_set_with_provenance(tmp_path):
    entries = _run(tmp_path, "{method: histogram}")
    fakes, real = _chunks(entries["generate-colortransfer"]), _chunks(entries["ingest"])
    train = real["split"].astype(str) == "train"
    assert len(fakes["path"]) == 2 * int(train.sum())  # every train image x the 2 other cameras
    assert (fakes["target_camid"] != fakes["camid"]).all()
    assert all(str(c).startswith("colortransfer-histogram:") for c in fakes["gen_checksum"])
    by_path = {p: i for i, p in enumerate(real["path"])}
    i = 0
    origin = decode_stored(real["image"][by_path[fakes["origin_path"][i]]])
    fake = cv2.imdecode(np.frombuffer(fakes["image"][i], np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    assert fake.shape == origin.shape and not np.array_equal(fake, origin)
    assert int(fakes["pid"][i]) == int(real["pid"][by_path[fakes["origin_path"][i]]])  # identity kept
    with open_h5(entries["export-hdf5"] / "dataset.h5") as f:
        m = f.meta("train")
        assert m.is_fake.sum() == len(fakes["path"]) and (~m.is_fake).sum() == int(train.sum())
        assert (m.pid[m.origin[m.is_fake]] == m.pid[m.is_fake]).all()


def test_rerun_is_byte_identical_and_fakes_per_image_draws(tmp_path):
    a = _run(tmp_path / "a", "{fakes_per_image: 1, seed: 3, height: 48, width: 24}")
    b = _run(tmp_path / "b", "{fakes_per_image: 1, seed: 3, height: 48, width: 24}")
    ca, cb = _chunks(a["generate-colortransfer"]), _chunks(b["generate-colortransfer"])
    assert [bytes(x) for x in ca["image"]] == [bytes(x) for x in cb["image"]]
    train = (_chunks(a["ingest"])["split"].astype(str) == "train").sum()
    assert len(ca["path"]) == int(train)
    assert cv2.imdecode(np.frombuffer(ca["image"][0], np.uint8), cv2.IMREAD_COLOR).shape == (48, 24, 3)


def test_unknown_target_camera_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"target_cams \[7\] have no train images.*cameras are \[0, 1, 2\]"):
        _run(tmp_path, "{target_cams: [7]}")


def test_unknown_method_names_the_choices(tmp_path):
    with pytest.raises(ConfigError, match="reinhard.*histogram"):
        _run(tmp_path, "{method: reinhart}")
