"""LSRO through the runner: train-dcgan -> generate-unconditional -> assign-labels (lsro) -> export-hdf5."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from reidaug.data.h5format import open_h5, verify
from reidaug.errors import ConfigError
from reidaug.pipeline.config import load_pipeline
from reidaug.pipeline.context import read_h5_chunk
from reidaug.pipeline.graph import build_graph
from reidaug.pipeline.runner import RunOptions, run_pipeline
from reidaug.stages import STAGES

PIPELINE = """\
name: t
stages:
  demo-data: {params: {num_ids: 6, images_per_id_per_cam: 2, height: 64, width: 32}}
  ingest: {params: {format: market1501}, inputs: {source: demo-data.dataset}}
  train-dcgan:
    params: {image_height: 32, image_width: 16, nz: 8, ngf: 4, ndf: 4, iterations: 6, train_batch: 4,
             checkpoint_every: 3, sample_every: 3, log_every: 2, threads: 1}
  generate-unconditional: {params: {num_images: 10, chunk_size: 4, seed: 5, batch_size: 3, threads: 1}}
  assign-labels:
    inputs: {unconditional: generate-unconditional.fakes}
  export-hdf5:
    params: {image_height: 64, image_width: 32}
    inputs: {unconditional: generate-unconditional.fakes, labels: assign-labels.labels}
"""


def run(tmp_path: Path, text: str = PIPELINE):
    p = tmp_path / "p.yaml"
    p.write_text(textwrap.dedent(text))
    graph = build_graph(load_pipeline(p), STAGES)
    report = run_pipeline(graph, tmp_path / "ws", options=RunOptions(workers=1))
    return graph, {r.name: r.entry for r in report.results}


def test_lsro_fakes_end_to_end_with_provenance_and_uniform_labels(tmp_path):
    _, entries = run(tmp_path)
    train = entries["train-dcgan"]
    assert (train / "models" / "dcgan.pt").is_file() and (train / "train" / "dcgan" / "samples" / "final.png").is_file()
    meta = json.loads((train / "meta.json").read_text())["summary"]
    assert meta["steps"] == 6 and meta["train_images"] == 12
    chunks = [read_h5_chunk(c)[0] for c in sorted((entries["generate-unconditional"] / "chunks").glob("*.h5"))]
    assert [len(c["path"]) for c in chunks] == [4, 4, 2]
    idx = np.concatenate([c["noise_index"] for c in chunks])
    np.testing.assert_array_equal(idx, np.arange(10))
    assert all((c["noise_seed"] == 5).all() and (c["pid"] == -1).all() for c in chunks)
    assert len({g for c in chunks for g in c["gen_checksum"]}) == 1
    h5 = entries["export-hdf5"] / "dataset.h5"
    assert verify(h5) == []
    with open_h5(h5) as f:
        m = f.meta("train")
        fake = m.source == {v: k for k, v in m.source_names.items()}["dcgan"]
        assert fake.sum() == 10 and (m.pid[fake] == -1).all() and (m.label[fake] == -1).all()
        assert (m.origin[fake] == -1).all()
        c = int(m.label.max()) + 1
        rows = np.flatnonzero(fake)
        dense = f.targets("train", rows)  # LSRO: uniform over the C train identities
        np.testing.assert_allclose(dense, np.full((len(rows), c), 1 / c), atol=1e-3)
        assert f.read_image("train", int(rows[0])).shape == (64, 32, 3)
    from reidaug.data.inspect import grid, summary

    text = summary(h5)
    assert "none: 10" in text  # the fakes' camera: none, not a camera "-1"
    assert grid(h5, tmp_path / "grid.png").stat().st_size > 1000


def test_a_re_id_model_trains_on_real_plus_lsro_fakes(tmp_path):
    from reidaug.train.config import TrainConfig
    from reidaug.train.trainer import train

    _, entries = run(tmp_path)
    cfg = TrainConfig(backbone="tiny", pretrained="none", height=64, width=32, epochs=1, sampler="realfake",
                      train_batch_size=8, real_per_batch=4, fake_per_batch=4, num_workers=0, threads=1,
                      random_erasing=False, warmup_epochs=0)
    result = train(cfg, entries["export-hdf5"] / "dataset.h5", tmp_path / "run")
    assert result.steps >= 1 and np.isfinite(result.final_loss)


def test_generation_is_a_pure_function_of_the_generator_seed_and_index(tmp_path):
    from reidaug.gen.common import pick_device
    from reidaug.gen.unconditional import UnconditionalGenerator

    _, entries = run(tmp_path)
    gen = UnconditionalGenerator.from_folder(entries["train-dcgan"] / "models", pick_device("cpu", "device"))
    chunks = [read_h5_chunk(c)[0] for c in sorted((entries["generate-unconditional"] / "chunks").glob("*.h5"))]
    from reidaug.data.images import decode_stored

    stored = decode_stored(chunks[1]["image"][2])  # fake number 6
    np.testing.assert_array_equal(gen.generate(5, [6])[0], stored)


def test_a_teacher_labels_identity_less_samples(tmp_path):
    """Teacher soft labels on LSRO's samples (no identity: pid -1): each sample gets the real-only teacher's
    view instead of the uniform target; the label stays -1 and the report claims no agreement rate."""
    text = PIPELINE.replace("""  assign-labels:
    inputs: {unconditional: generate-unconditional.fakes}
""", """  labels-real: {uses: assign-labels}
  export-real: {uses: export-hdf5, params: {sets: [real], image_height: 64, image_width: 32},
                inputs: {labels: labels-real.labels}}
  teacher:
    uses: train-reid
    inputs: {data: export-real.hdf5}
    params: {backbone: tiny, pretrained: none, height: 64, width: 32, epochs: 8, warmup_epochs: 0, lr: 0.01,
             train_batch_size: 8, num_workers: 0, threads: 1, evaluate: false, random_erasing: false}
  assign-labels:
    params: {schemes: {unconditional: teacher}, topk: 3, temperature: 0.1}
    inputs: {unconditional: generate-unconditional.fakes, teacher: teacher.model}
""")
    _, entries = run(tmp_path, text)
    summary = json.loads((entries["assign-labels"] / "meta.json").read_text())["summary"]
    assert summary["sets"]["unconditional"] == {"scheme": "teacher", "samples": 10}  # no agreement rate claimed
    with open_h5(entries["export-hdf5"] / "dataset.h5") as f:
        m = f.meta("train")
        rows = np.flatnonzero(m.source == {v: k for k, v in m.source_names.items()}["dcgan"])
        assert len(rows) == 10 and (m.label[rows] == -1).all()
        dense = f.targets("train", rows)
    # the targets are the teacher's probabilities of each stored sample (top-3 of 3 classes: all of them)
    from reidaug.data.images import decode_stored
    from reidaug.train.features import predict_probs

    chunks = [read_h5_chunk(c)[0] for c in sorted((entries["generate-unconditional"] / "chunks").glob("*.h5"))]
    images = [decode_stored(b) for c in chunks for b in c["image"]]
    want = predict_probs(entries["teacher"] / "run", images, temperature=0.1, device="cpu")
    assert want.shape == dense.shape == (10, 3)
    assert want.max(axis=1).min() > 0.5  # a confident teacher: its view is far from LSRO's uniform 1/3
    np.testing.assert_allclose(dense, want, atol=2e-3)


def test_export_of_unconditional_fakes_without_labels_is_refused(tmp_path):
    text = PIPELINE.replace("    inputs: {unconditional: generate-unconditional.fakes, labels: assign-labels.labels}",
                            "    inputs: {unconditional: generate-unconditional.fakes}")
    with pytest.raises(ConfigError, match="bind inputs.labels to an assign-labels stage"):
        run(tmp_path, text)


def test_a_size_the_dcgan_cannot_make_fails_when_the_yaml_loads(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text(PIPELINE.replace("image_height: 32, image_width: 16, nz", "image_height: 48, image_width: 24, nz"))
    with pytest.raises(ConfigError, match="4 x a power of two"):
        build_graph(load_pipeline(p), STAGES)


def test_a_killed_dcgan_training_resumes_to_the_same_generator(tmp_path):
    import torch

    from reidaug.gen.unconditional import TrainSettings, train_model

    torch.set_num_threads(1)
    images = np.random.default_rng(0).integers(0, 255, (10, 32, 16, 3), dtype=np.uint8)
    hp = {"image_height": 32, "image_width": 16, "nz": 8, "ngf": 4, "ndf": 4, "lr": 2e-4}
    settings = TrainSettings(iterations=6, train_batch=4, seed=1, checkpoint_every=2, sample_every=3, log_every=1)
    cpu = torch.device("cpu")
    straight = train_model(images, hp, settings, tmp_path / "a", tmp_path / "a.pt", cpu)
    with pytest.raises(KeyboardInterrupt):
        train_model(images, hp, settings, tmp_path / "b", tmp_path / "b.pt", cpu, should_stop=lambda s: s == 4)
    resumed = train_model(images, hp, settings, tmp_path / "b", tmp_path / "b.pt", cpu)
    assert resumed.resumed_from == 4 and resumed.checksum == straight.checksum
    assert (tmp_path / "a" / "losses.jsonl").read_text() == (tmp_path / "b" / "losses.jsonl").read_text()


def test_score_fakes_gives_lsro_samples_an_overall_freid_with_the_real_judge(tmp_path, shared_dir):
    """LSRO's samples have no identity or target camera: score-fakes scores them with FReID against all the
    real train images, beside the floor of two real halves, and says the identity metric does not apply."""
    judge = shared_dir / "models" / "osnet_x0_25_msmt17.onnx"
    if not judge.is_file():
        pytest.skip(f"OSNet judge not found at {judge}")
    text = PIPELINE.replace("num_images: 10,", "num_images: 12,") + f"""\
  score-fakes:
    params: {{judge: {judge}}}
"""
    _, entries = run(tmp_path, text)
    res = json.loads((entries["score-fakes"] / "metrics.json").read_text())
    o = res["freid_overall"]
    assert o["num_fakes"] == 12 and o["num_real"] == 12 and o["fd"] > 0 and o["fd_real_halves"] > 0
    assert o["fd_baseline"] is None and res["freid"] == {} and res["identity"]["fakes"] is None
    table = (entries["score-fakes"] / "metrics.md").read_text()
    assert "12 fakes with no identity (not scored)" in table and "two halves of the real images" in table


def test_cpu_bf16_generation_is_opt_in_keyed_and_close_to_fp32(tmp_path):
    """generate-*'s cpu_bf16: another key (numerics cpu-bf16), fakes within a few grey levels of FP32's."""
    graph, entries = run(tmp_path)
    text = PIPELINE.replace("batch_size: 3, threads: 1}", "batch_size: 3, threads: 1, cpu_bf16: true}")
    (tmp_path / "bf16").mkdir()
    graph16, entries16 = run(tmp_path / "bf16", text)
    assert graph16.keys["generate-unconditional"] != graph.keys["generate-unconditional"]
    assert graph16.keys["train-dcgan"] == graph.keys["train-dcgan"]  # training is untouched
    assert graph16.material["generate-unconditional"]["numerics"] == "cpu-bf16"
    assert "numerics" not in graph.material["generate-unconditional"]

    import cv2

    def images(entry):
        return np.stack([cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR).astype(int)
                         for c in sorted((entry / "chunks").glob("*.h5")) for b in read_h5_chunk(c)[0]["image"]])

    a, b = images(entries["generate-unconditional"]), images(entries16["generate-unconditional"])
    diff = np.abs(a - b)
    assert 0 < diff.max() <= 40 and diff.mean() < 4, (diff.max(), diff.mean())  # bf16 rounding, not another image
    spec = STAGES["generate-unconditional"]
    assert "cpu_bf16" not in spec.semantic_params(spec.params())  # old keys stay
