"""ingest -> export-hdf5 -> reader: the same pixels, ids and cameras come back."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from reidaug.data.h5format import open_h5, verify
from reidaug.data.images import LETTERBOX_FILL, decode_image
from reidaug.data.torchdata import ReidH5Dataset
from reidaug.errors import ConfigError, GraphError
from reidaug.pipeline.config import load_pipeline
from reidaug.pipeline.graph import build_graph
from reidaug.pipeline.runner import RunOptions, run_pipeline
from reidaug.stages import STAGES


def demo_pipeline(tmp_path: Path, export: str, extra: str = "") -> Path:
    p = tmp_path / "p.yaml"
    p.write_text(textwrap.dedent("""\
        name: t
        stages:
          demo-data:
            params: {num_ids: 6, images_per_id_per_cam: 2}
          ingest:
            params: {format: market1501, chunk_size: 7}
            inputs: {source: demo-data.dataset}
          export-hdf5:
            params: %s
        """) % export + extra)
    return p


def run(p: Path, ws: Path):
    graph = build_graph(load_pipeline(p), STAGES)
    report = run_pipeline(graph, ws, options=RunOptions(workers=2))
    return graph, {r.name: r.entry for r in report.results}


def test_round_trip_png_gives_back_pixels_ids_cameras(tmp_path):
    p = demo_pipeline(tmp_path, "{encoding: png, keep_native_size: true}")
    _, entries = run(p, tmp_path / "ws")
    h5 = entries["export-hdf5"] / "dataset.h5"
    assert verify(h5) == []
    root = entries["demo-data"] / "dataset"
    with open_h5(h5) as f:
        for split, folder in (("train", "bounding_box_train"), ("query", "query"), ("gallery", "bounding_box_test")):
            meta = f.meta(split)
            files = sorted((root / folder).glob("*.jpg"))
            assert len(meta) == len(files)
            for i in range(len(meta)):
                path = meta.path[i]
                name = Path(path).name
                assert np.array_equal(f.read_image(split, i), decode_image(root / path).rgb), path
                assert meta.pid[i] == int(name[:4])
                assert meta.camid[i] == int(name[6]) - 1  # c1 -> camid 0
        labels = f.meta("train").label
        assert sorted(set(labels.tolist())) == list(range(3))  # 6 ids: 3 train ids -> 0..2
        assert f.info.label_smoothing == "precomputed"
        assert set(f.info.stage_keys) == {"demo-data", "ingest", "export-hdf5"}
    ds = ReidH5Dataset(h5, split="query")
    item = ds[0]
    assert int(item["pid"]) == int(Path(open_h5(h5).meta("query").path[0]).name[:4])


def test_export_is_byte_identical_across_workspaces(tmp_path):
    p = demo_pipeline(tmp_path, "{image_height: 64, image_width: 32}")
    _, a = run(p, tmp_path / "a")
    _, b = run(p, tmp_path / "b")
    assert (a["export-hdf5"] / "dataset.h5").read_bytes() == (b["export-hdf5"] / "dataset.h5").read_bytes()


def test_publish_copy_and_claim_conflicts(tmp_path):
    p = demo_pipeline(tmp_path, "{image_height: 64, image_width: 32, output: out/train.h5}")
    _, entries = run(p, tmp_path / "ws")
    assert (tmp_path / "out" / "train.h5").read_bytes() == (entries["export-hdf5"] / "dataset.h5").read_bytes()
    twice = demo_pipeline(tmp_path, "{output: out/train.h5}", extra=(
        "  export-again:\n    uses: export-hdf5\n    params: {encoding: jpeg, output: out/train.h5}\n"))
    with pytest.raises(GraphError, match="both write"):
        build_graph(load_pipeline(twice), STAGES)


def test_bad_export_params_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"sets.*Did you mean \"camstyle\""):
        build_graph(load_pipeline(demo_pipeline(tmp_path, "{sets: [real, camstyl]}")), STAGES)
    # a known set that no stage provides: said when the export plans, naming the input to bind
    with pytest.raises(ConfigError, match=r"inputs.camstyle"):
        run(demo_pipeline(tmp_path, "{sets: [real, camstyle]}"), tmp_path / "ws")
    with pytest.raises(ConfigError, match=r"compression.*gzip-0"):
        build_graph(load_pipeline(demo_pipeline(tmp_path, "{compression: zstd}")), STAGES)


def test_pad_resize_is_keyed_only_when_set_and_refuses_stretched_fakes(tmp_path):
    spec = STAGES["export-hdf5"]
    default = spec.semantic_params(spec.params())
    assert "resize" not in default  # files exported before the option keep their cache
    assert spec.semantic_params(spec.params(resize="pad"))["resize"] == "pad"
    # a real-only export pads: the demo crops (128 x 64 drawn at another size) land in 64 x 24 unstretched
    _, entries = run(demo_pipeline(tmp_path, "{image_height: 64, image_width: 24, resize: pad}"), tmp_path / "ws")
    with open_h5(entries["export-hdf5"] / "dataset.h5") as f:
        assert f.info.image_resize == "pad" and f.info.image_size == (64, 24)
        assert f.meta("train").native_hw[0].tolist() == [128, 64]  # scale 0.375 -> 48 x 24, 8 px bands
        img = f.read_image("train", 0)
    assert (img[:8] == LETTERBOX_FILL).all() and (img[56:] == LETTERBOX_FILL).all()
    assert not (img[8:56] == LETTERBOX_FILL).all(axis=2).all(axis=1).any()  # every body row has the image
    with pytest.raises(ConfigError, match=r"resize: pad.*keep_native_size"):
        run(demo_pipeline(tmp_path, "{encoding: png, keep_native_size: true, resize: pad}"), tmp_path / "ws2")
    with pytest.raises(ConfigError, match=r"params.resize"):
        build_graph(load_pipeline(demo_pipeline(tmp_path, "{resize: crop}")), STAGES)
    export = ("{resize: pad, sets: [real, camstyle]}\n"
              "    inputs: {camstyle: generate-colortransfer.fakes, labels: assign-labels.labels}")
    fakes = demo_pipeline(tmp_path, export, extra=(
        "  generate-colortransfer: {}\n"
        "  assign-labels:\n    params: {schemes: {real: lsr, camstyle: lsr}}\n"
        "    inputs: {camstyle: generate-colortransfer.fakes}\n"))
    with pytest.raises(ConfigError, match=r"generated sets \['camstyle'\].*stretched.*sets: \[real\]"):
        run(fakes, tmp_path / "ws3")
