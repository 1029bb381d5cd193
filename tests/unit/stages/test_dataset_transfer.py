"""Dataset-to-dataset transfer (PTGAN / SPGAN): train-camstyle with ``domains: datasets`` between two
synthetic datasets, the source rendered in the target's style with provenance, re-ID trained on the
translated source and tested on the target (``eval_data``), fine-tuned from it (``init_model``); SPGAN's
siamese loss resumes bit-identically; and the errors a user meets."""
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

REID = ("backbone: tiny, pretrained: none, height: 64, width: 32, epochs: 2, warmup_epochs: 1, "
        "train_batch_size: 8, log_every: 2, num_workers: 0")
PIPE = f"""\
    name: d2d
    stages:
      demo-data: {{params: {{num_ids: 8, num_cams: 2, images_per_id_per_cam: 2, height: 64, width: 32}}}}
      ingest:
        params: {{format: market1501, chunk_size: 8}}
        inputs: {{source: demo-data.dataset}}
      target-data:
        uses: demo-data
        params: {{num_ids: 12, num_cams: 3, images_per_id_per_cam: 2, height: 64, width: 32, seed: 7}}
      ingest-target:
        uses: ingest
        params: {{format: market1501, chunk_size: 16}}
        inputs: {{source: target-data.dataset}}
      train-camstyle:
        params: {{domains: datasets, lambda_similarity: 2.0, image_height: 48, image_width: 24, ngf: 8, ndf: 8,
                 n_blocks: 1, iterations: 6, checkpoint_every: 3, sample_every: 6, log_every: 3}}
        inputs: {{target: ingest-target.dataset}}
      generate-camstyle: {{params: {{batch_size: 5}}}}
      assign-labels:
        params: {{schemes: {{camstyle: onehot}}}}
        inputs: {{camstyle: generate-camstyle.fakes}}
      export-translated:
        uses: export-hdf5
        params: {{sets: [real, camstyle], splits: [train], image_height: 64, image_width: 32}}
        inputs: {{camstyle: generate-camstyle.fakes, labels: assign-labels.labels}}
      export-target:
        uses: export-hdf5
        params: {{sets: [real], image_height: 64, image_width: 32}}
        inputs: {{dataset: ingest-target.dataset}}
      reid-translated:
        uses: train-reid
        inputs: {{data: export-translated.hdf5, eval_data: export-target.hdf5}}
        params: {{sources: [camstyle], {REID}}}
      reid-finetuned:
        uses: train-reid
        inputs: {{data: export-target.hdf5, init_model: reid-translated.model}}
        params: {{{REID}}}
"""


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def run(path: Path, ws: Path, until: str | None = None):
    graph = build_graph(load_pipeline(path), STAGES)
    report = run_pipeline(graph, ws, targets=[until] if until else None, options=RunOptions(workers=2))
    return {r.name: r.entry for r in report.results}


def chunks(entry: Path) -> dict[str, np.ndarray]:
    parts = [read_h5_chunk(p)[0] for p in sorted((entry / "chunks").glob("*.h5"))]
    return {k: np.concatenate([np.asarray(c[k]) for c in parts]) for k in parts[0]}


def test_source_rendered_in_the_target_style_trained_and_tested_across_datasets(tmp_path):
    entries = run(write(tmp_path, PIPE), tmp_path / "ws")
    ct = entries["train-camstyle"]
    assert sorted(p.name for p in (ct / "models").glob("*.pt")) == ["cyclegan_source-target.pt"]
    summary = json.loads((ct / "meta.json").read_text())["summary"]
    assert summary["domains"] == "datasets"
    (model,) = summary["models"]
    src, tgt = chunks(entries["ingest"]), chunks(entries["ingest-target"])
    n_src, n_tgt = int((src["split"] == "train").sum()), int((tgt["split"] == "train").sum())
    assert model["num_images"] == [n_src, n_tgt]  # every train camera of each dataset, no test image
    assert "ingest (source, domain A) -> ingest-target (target, domain B)" in summary["report"][0]
    assert any("SPGAN similarity loss" in line for line in summary["report"])
    log = [json.loads(x) for x in (ct / "train" / "cyclegan_source-target" / "losses.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [3, 6]
    assert all(np.isfinite(r[k]) for r in log for k in ("sim", "S", "sim_pos", "sim_neg"))
    assert all(0 <= r["sim_pos"] <= 2 and 0 <= r["sim_neg"] <= 2 for r in log)  # unit-length embeddings

    fakes = chunks(entries["generate-camstyle"])
    assert len(fakes["path"]) == n_src  # each source train image once, in the target's style
    assert (fakes["target_camid"] == -1).all()
    assert all(p.endswith("_fake_to_target.png") for p in fakes["path"])
    by_path = {p: i for i, p in enumerate(src["path"])}
    for origin, pid, cam in zip(fakes["origin_path"], fakes["pid"], fakes["camid"]):
        i = by_path[origin]
        assert src["split"][i] == "train" and src["pid"][i] == pid and src["camid"][i] == cam
    assert set(fakes["gen_checksum"]) == {model["checksum"]}

    h5 = entries["export-translated"] / "dataset.h5"
    assert verify(h5) == []
    with open_h5(h5) as f:
        m = f.meta("train")
        fake = m.is_fake
        assert fake.sum() == n_src == (~fake).sum() and (m.gen_target_camid[fake] == -1).all()
    train_images = json.loads((entries["reid-translated"] / "run" / "config.json").read_text())["resolved"]
    assert train_images["num_train_images"] == n_src  # sources: [camstyle], the translated images only

    test = json.loads((entries["reid-translated"] / "run" / "metrics.json").read_text())
    with open_h5(entries["export-target"] / "dataset.h5") as f:
        n_query = len(f.meta("query").pid)
    assert test["num_queries"] == n_query  # tested on the target's queries, not the (absent) source ones
    report = json.loads((entries["reid-translated"] / "meta.json").read_text())["summary"]["report"]
    assert any(line.startswith("test on export-target's file") for line in report)

    from reidaug.train.model import load_model

    resolved = json.loads((entries["reid-finetuned"] / "run" / "config.json").read_text())["resolved"]
    assert Path(resolved["init_from"]).parent == entries["reid-translated"]  # started from the translated model
    # the source's 4 train identities, then a fresh classifier over the target's 6
    assert load_model(entries["reid-translated"] / "run").config.num_classes == 4
    assert load_model(entries["reid-finetuned"] / "run").config.num_classes == 6


def test_fine_tuning_starts_from_every_weight_but_the_classifier(tmp_path):
    from reidaug.train.model import ModelConfig, build_model, save_model
    from reidaug.train.trainer import init_from_model

    import torch

    torch.manual_seed(0)
    src = build_model(ModelConfig(backbone="tiny", num_classes=5, head="bnneck", input_size=(64, 32)), "none")
    save_model(src, tmp_path / "model.pt")
    dst = build_model(ModelConfig(backbone="tiny", num_classes=9, head="bnneck", input_size=(64, 32)), "none")
    taken = init_from_model(dst, tmp_path / "model.pt")
    own, theirs = dst.state_dict(), src.state_dict()
    assert taken == len([k for k in theirs if not k.startswith("classifier.")])
    for k, v in own.items():
        if k.startswith("classifier."):
            assert v.shape[0] == 9  # this run's identities, fresh
        else:
            assert torch.equal(v, theirs[k]), k
    other = build_model(ModelConfig(backbone="tiny", num_classes=9, head="ide", input_size=(64, 32)), "none")
    with pytest.raises(ConfigError, match=r"differs from this run in head.*Fix: train both with the same"):
        init_from_model(other, tmp_path / "model.pt")


def test_spgan_training_resumes_bit_identically(tmp_path):
    """The siamese net, its optimiser and its schedule are in the checkpoint: a killed SPGAN run resumes as
    if never stopped, and the generator file holds no siamese weights."""
    import torch

    from reidaug.gen.camstyle import ModelJob, TrainSettings, train_model
    from reidaug.gen.common import pick_device

    rng = np.random.default_rng(0)
    images = {c: rng.integers(0, 255, (6, 36, 20, 3), dtype=np.uint8) for c in (0, 1)}
    hp = dict(image_height=32, image_width=16, ngf=4, ndf=4, n_blocks=1, d_layers=2, lambda_cycle=10.0,
              lambda_identity=0.5, lr=2e-4, pool_size=3, lambda_similarity=2.0, similarity_margin=2.0)
    settings = TrainSettings(iterations=8, checkpoint_every=4, sample_every=100, log_every=2)
    job = ModelJob("cyclegan", (0, 1), "datasets")
    cpu = pick_device("cpu", "test")
    straight = train_model(job, images, hp, settings, tmp_path / "a", tmp_path / "a.pt", cpu)
    with pytest.raises(KeyboardInterrupt):
        train_model(job, images, hp, settings, tmp_path / "b", tmp_path / "b.pt", cpu, should_stop=lambda s: s == 4)
    resumed = train_model(job, images, hp, settings, tmp_path / "b", tmp_path / "b.pt", cpu)
    assert resumed.resumed_from == 4 and resumed.checksum == straight.checksum
    assert (tmp_path / "a" / "losses.jsonl").read_text() == (tmp_path / "b" / "losses.jsonl").read_text()
    state = torch.load(tmp_path / "a.pt", weights_only=False)
    assert state["domains"] == "datasets" and not any(k.startswith("S.") for k in state["weights"])


def test_siamese_loss_pulls_positive_pairs_and_pushes_negatives_to_the_margin():
    import torch

    from reidaug.models.cyclegan import contrastive_loss

    a = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    assert contrastive_loss(a, a, True, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert contrastive_loss(a, a, False, 2.0).item() == pytest.approx(4.0, abs=1e-4)  # (m - 0)^2
    assert contrastive_loss(a, -a, False, 2.0).item() == pytest.approx(0.0, abs=1e-6)  # antipodal: at the margin
    assert contrastive_loss(a, -a, True, 2.0).item() == pytest.approx(4.0, abs=1e-4)  # d^2 = 4


@pytest.mark.parametrize("params, words", [
    (dict(lambda_similarity=2.0), r"lambda_similarity is SPGAN's loss between two datasets.*domains: datasets"),
    (dict(domains="datasets", model="stargan"), r"domains: datasets trains one CycleGAN.*model: cyclegan"),
    (dict(domains="datasets", cameras=[0, 1]), r"cameras \[0, 1\] choose camera pairs.*drop cameras"),
    (dict(similarity_margin=1.0), r"similarity_margin only shapes SPGAN's loss"),
])
def test_dataset_transfer_params_that_cannot_work_name_the_fix(params, words):
    with pytest.raises(Exception, match=words):
        STAGES["train-camstyle"].params(**params)
    spec = STAGES["train-camstyle"]
    assert not {"domains", "lambda_similarity", "similarity_margin"} & set(spec.semantic_params(spec.params()))


def _edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


@pytest.mark.parametrize("old, new, words", [
    ("        inputs: {target: ingest-target.dataset}\n", "",
     r"domains: datasets translates.*inputs.target is not bound.*ingest-target"),
    ("inputs: {target: ingest-target.dataset}", "inputs: {target: ingest.dataset}",
     r"inputs.dataset and inputs.target are the same ingest output"),
    ("domains: datasets, lambda_similarity: 2.0,", "",
     r"inputs.target is bound \(ingest-target\), but params.domains is cameras"),
    ("generate-camstyle: {params: {batch_size: 5}}",
     "generate-camstyle: {params: {batch_size: 5}, inputs: {dataset: ingest-target.dataset}}",
     r"inputs.dataset \(ingest-target\) is the target dataset.*Fix: bind dataset to the source"),
    ("generate-camstyle: {params: {batch_size: 5}}", "generate-camstyle: {params: {batch_size: 5, target_cams: [1]}}",
     r"params.target_cams picks target cameras.*translate between datasets"),
])
def test_dataset_transfer_wiring_mistakes_are_located_errors(tmp_path, old, new, words):
    text = _edit(PIPE, old, new)
    with pytest.raises(ConfigError, match=words):
        run(write(tmp_path, text), tmp_path / "ws", until="generate-camstyle")


def test_eval_data_that_would_never_be_read_is_refused(tmp_path):
    bound = "inputs: {data: export-translated.hdf5, eval_data: export-target.hdf5}\n        params: {"
    text = _edit(PIPE, bound, bound + "evaluate: false, ")
    with pytest.raises(ConfigError, match=r"inputs.eval_data \(export-target\).*evaluate is false"):
        run(write(tmp_path, text), tmp_path / "ws", until="reid-translated")


def test_score_fakes_measures_freid_to_the_target_beside_the_untranslated_origins(tmp_path, shared_dir):
    judge = shared_dir / "models" / "osnet_x0_25_msmt17.onnx"
    text = PIPE + f"""\
      score-fakes:
        params: {{judge: {judge}}}
        inputs: {{hdf5: export-translated.hdf5, target: export-target.hdf5}}
      score-plain:
        uses: score-fakes
        params: {{judge: {judge}}}
        inputs: {{hdf5: export-translated.hdf5}}
    """
    graph = build_graph(load_pipeline(write(tmp_path, text)), STAGES)
    # a bound target is in the key (unbound, the slot is left out: demo.yaml's pinned score-fakes key holds)
    assert graph.keys["score-fakes"] != graph.keys["score-plain"]
    report = run_pipeline(graph, tmp_path / "ws", targets=["score-fakes", "score-plain"],
                          options=RunOptions(workers=2))
    entries = {r.name: r.entry for r in report.results}
    m = json.loads((entries["score-fakes"] / "metrics.json").read_text())
    t = m["freid_target"]
    with open_h5(entries["export-target"] / "dataset.h5") as f:
        assert t["num_target"] == int((~f.meta("train").is_fake).sum())
    assert t["num_fakes"] == m["counts"]["num_fakes"]
    assert t["fd"] >= 0 and t["fd_baseline"] >= 0 and t["fd_target_halves"] >= 0
    assert "FReID vs the target dataset" in (entries["score-fakes"] / "metrics.md").read_text()
    w = m["identity_translated"]  # among the translated images, beside among their origins
    assert w["num"] == m["counts"]["num_fakes"]
    for side in ("fakes", "baseline"):
        assert 0 <= w[side]["rank1"] <= 1 and 0 < w[side]["mAP"] <= 1
    other = json.loads((entries["score-plain"] / "metrics.json").read_text())
    assert "freid_target" not in other and "identity_translated" not in other and other["identity"] == m["identity"]


def test_a_target_without_a_judge_is_refused_as_the_yaml_loads(tmp_path):
    text = PIPE + """\
      score-fakes:
        inputs: {hdf5: export-translated.hdf5, target: export-target.hdf5}
    """
    with pytest.raises(ConfigError, match=r"score-fakes.*inputs.target is bound.*params.judge is not set.*Fix"):
        build_graph(load_pipeline(write(tmp_path, text)), STAGES)


def test_the_score_fakes_command_scores_a_file_and_its_target(tmp_path, shared_dir):
    """`reidaug score-fakes` (it imported a function that a refactor had moved, and no test ran it)."""
    from click.testing import CliRunner

    from reidaug.cli import main

    judge = shared_dir / "models" / "osnet_x0_25_msmt17.onnx"
    entries = run(write(tmp_path, PIPE), tmp_path / "ws", until="export-target")
    entries |= run(write(tmp_path, PIPE), tmp_path / "ws", until="export-translated")
    fakes, target = entries["export-translated"] / "dataset.h5", entries["export-target"] / "dataset.h5"
    out = tmp_path / "scores"
    r = CliRunner().invoke(main, ["score-fakes", str(fakes), "--judge", str(judge), "--target", str(target),
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "FReID vs the target dataset" in r.output and "identity rank-1" in r.output
    assert json.loads((out / "metrics.json").read_text())["freid_target"]["fd"] >= 0
    r = CliRunner().invoke(main, ["score-fakes", str(fakes), "--target", str(target)])
    assert r.exit_code != 0 and "needs a judge model" in r.output
