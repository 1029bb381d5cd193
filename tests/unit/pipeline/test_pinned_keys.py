"""Cache keys of the shipped pipelines are pinned: a refactor that changes one re-runs users' caches.

Each key is computed with ingest's source fingerprint replaced by a constant, so the pin depends
on stage names, versions, semantic params and the graph only (not on the files' mtimes). A key
may change only where a stated fix changed a stage's outputs; then bump that stage's version
and update the pin in pinned_keys.json in the same commit, saying why.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from reidaug.pipeline.config import load_pipeline
from reidaug.pipeline.graph import build_graph
from reidaug.stages import STAGES

PROJECT_ROOT = Path(__file__).resolve().parents[3]

PINNED: dict[str, dict[str, str]] = json.loads((Path(__file__).with_name("pinned_keys.json")).read_text())


def keys_of(config: str) -> dict[str, str]:
    registry = dict(STAGES)
    registry["ingest"] = dataclasses.replace(STAGES["ingest"], fingerprint=lambda params, base_dir: "pinned-source")
    return dict(build_graph(load_pipeline(PROJECT_ROOT / config), registry).keys)


@pytest.mark.parametrize("config,needs_shared", [("configs/demo.yaml", False),
                                                 ("configs/ablations/cuhk01_camstyle.yaml", False),
                                                 ("configs/real/cuhk01_posegan.yaml", True)])
def test_cache_keys_are_pinned(config: str, needs_shared: bool, request: pytest.FixtureRequest) -> None:
    if needs_shared:  # its MoveNet and judge files are params hashed by content: ../shared holds them
        request.getfixturevalue("shared_dir")
    assert keys_of(config) == PINNED[config]


def test_the_campaigns_best_arm_as_one_pipeline_is_the_campaigns_own_stages() -> None:
    """configs/real/cuhk01_camstyle_id.yaml reruns the campaign's best arm and its control by name:
    every stage has the key of its campaign twin, so where the campaign ran, it is all cached."""
    one = keys_of("configs/real/cuhk01_camstyle_id.yaml")
    campaign = keys_of("configs/ablations/cuhk01_campaign.yaml")
    twins = {"reid-camstyle-id-s0": "camstyle-id-rp-re-s0", "reid-real-e18-s0": "real-re-e18-s0"}
    assert {name: campaign[twins.get(name, name)] for name in one} == one


def test_the_seed_system_configs_share_the_campaigns_cached_stages(shared_dir) -> None:
    """The LSRO, LSRO-controls, transfer and DG-Net configs run in the campaign's workspace on its ingest, real
    export and real-only control (and the controls on LSRO's and CamStyle's fakes): the same keys, so those are
    cached where the campaign ran and every arm is paired with the campaign's own control runs."""
    campaign = keys_of("configs/ablations/cuhk01_campaign.yaml")
    lsro = keys_of("configs/real/cuhk01_lsro.yaml")
    camstyle = keys_of("configs/real/cuhk01_camstyle_id.yaml")
    shared = ["ingest", "labels-real-lsr", "export-real"]
    for config in ("configs/real/cuhk01_lsro.yaml", "configs/ablations/cuhk01_lsro_controls.yaml",
                   "configs/real/synthetic_to_cuhk01.yaml", "configs/real/cuhk01_dgnet.yaml",
                   "configs/ablations/cuhk01_dgnet_controls.yaml"):
        keys = keys_of(config)
        assert {n: keys[n] for n in shared} == {n: campaign[n] for n in shared}, config
        controls = [n for n in keys if n.startswith(("real-re-e18-s", "reid-real-e18-s"))]
        assert controls and all(keys[n] == campaign["real-re-e18-s" + n[-1]] for n in controls), config
    controls = keys_of("configs/ablations/cuhk01_lsro_controls.yaml")
    assert all(controls[f"reid-lsro-s{k}"] == lsro[f"reid-lsro-s{k}"] for k in range(3))
    assert controls["generate-camstyle-id"] == camstyle["generate-camstyle-id"]


def test_the_dgnet_init_ablation_shares_the_arms_generator(shared_dir) -> None:
    """configs/ablations/cuhk01_dgnet_init.yaml's Kaiming generator and its held-out score are the ones the DG-Net
    arms use (cached, not retrained); the other two are other generators."""
    arms, init = keys_of("configs/real/cuhk01_dgnet.yaml"), keys_of("configs/ablations/cuhk01_dgnet_init.yaml")
    assert init["train-dgnet"] == arms["train-dgnet"]
    assert init["score-kaiming"] == arms["score-dgnet-heldout"]
    assert len({init["dgnet-normal"], init["train-dgnet"], init["dgnet-dkaiming"]}) == 3
    # the teacher arm's controls relabel the arms' swaps and LSRO's samples: the same fake sets, the same teacher
    controls, lsro = keys_of("configs/ablations/cuhk01_dgnet_controls.yaml"), keys_of("configs/real/cuhk01_lsro.yaml")
    assert controls["generate-dgnet"] == arms["generate-dgnet"]
    assert controls["generate-unconditional"] == lsro["generate-unconditional"]
    assert controls["real-re-e18-s0"] == arms["real-re-e18-s0"]


@pytest.mark.parametrize("config", sorted(str(p.relative_to(PROJECT_ROOT))
                                          for p in (PROJECT_ROOT / "configs").rglob("*.yaml")))
def test_every_shipped_pipeline_loads_and_builds(config: str, request: pytest.FixtureRequest) -> None:
    text = (PROJECT_ROOT / config).read_text()
    if "shared/" in text:  # model files hashed by content live in ../shared
        request.getfixturevalue("shared_dir")
    assert keys_of(config)
