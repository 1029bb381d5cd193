"""Hostile pipeline files (issue 14): every one is a one-line ConfigError with a position, fast and
small, never a raw yaml / RecursionError / MemoryError traceback."""
from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

from reidaug.errors import ConfigError
from reidaug.pipeline.config import MAX_ERRORS, MAX_PIPELINE_BYTES, load_pipeline

GOOD_HEAD = "name: t\nstages:\n  selftest-source: {}\n"


def error_of(tmp_path: Path, content: bytes | str) -> str:
    p = tmp_path / "p.yaml"
    p.write_bytes(content.encode() if isinstance(content, str) else content)
    t0 = time.perf_counter()
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError) as info:
            load_pipeline(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 5 and peak < 200 * 2**20  # the bound is 5 s / 500 MB
    return str(info.value)


def test_a_nul_byte_names_its_line_and_column(tmp_path):
    msg = error_of(tmp_path, GOOD_HEAD + "description: a\x00b\n")
    assert "p.yaml:4:15" in msg and "not allowed in YAML" in msg and "#x0000" in msg


def test_an_unterminated_quote_is_reported_where_it_opens(tmp_path):
    msg = error_of(tmp_path, GOOD_HEAD + 'description: "never closed\nsettings: {}\n\n\n')
    assert "p.yaml:4:14" in msg and "opens here and is never closed" in msg
    assert 'description: "never closed' in msg  # the snippet shows the opening line, not the end


def test_deep_nesting_is_refused_before_python_recursion(tmp_path):
    msg = error_of(tmp_path, "name: t\nstages: " + "[" * 20000 + "]" * 20000 + "\n")
    assert "p.yaml:2:" in msg and "nested deeper than" in msg


def test_yaml_aliases_are_refused_so_an_alias_bomb_costs_nothing(tmp_path):
    bomb = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    bomb += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    msg = error_of(tmp_path, GOOD_HEAD + "\n".join(bomb) + "\n")
    assert "p.yaml:5:" in msg and "aliases" in msg and "write the values out" in msg


def test_a_huge_file_is_refused_by_its_size(tmp_path):
    big = GOOD_HEAD + "".join(f"key{i}: {i}\n" for i in range(MAX_PIPELINE_BYTES // 8))
    msg = error_of(tmp_path, big)
    assert "larger than" in msg and "MiB" in msg


def test_many_errors_are_capped_with_a_count(tmp_path):
    text = GOOD_HEAD + "".join(f"unknown{i}: {i}\n" for i in range(500))
    msg = error_of(tmp_path, text)
    assert msg.count("unknown key") == MAX_ERRORS and "and 480 more errors" in msg
    assert len(msg) < 100_000


def test_non_utf8_names_the_line(tmp_path):
    msg = error_of(tmp_path, GOOD_HEAD.encode() + b"description: caf\xe9\n")
    assert "p.yaml:4:" in msg and "not UTF-8" in msg


@pytest.mark.parametrize("stage,key", [("selftest-source", "num_items"), ("train-camstyle", "iterations"),
                                       ("train-reid", "lr"), ("train-reid", "p"), ("ingest", "chunk_size"),
                                       ("generate-camstyle", "batch_size")])
def test_a_boolean_is_not_a_number(stage, key):
    # YAML's true is a Python bool, and bool is an int: pydantic alone took `iterations: true` as 1
    from reidaug.pipeline.graph import build_graph
    from reidaug.stages import STAGES

    loaded = load_pipeline(Path(__file__).parents[3] / "configs" / "demo.yaml",
                           overrides=[] if stage == "selftest-source" else [f"stages.{stage}.params.{key}=true"])
    if stage == "selftest-source":
        loaded = load_pipeline(text=f"name: t\nstages:\n  selftest-source:\n    params: {{{key}: true}}\n")
    with pytest.raises(ConfigError, match=f"{key}: expected .*, not a boolean"):
        build_graph(loaded, STAGES)


def test_booleans_stay_booleans_where_they_belong():
    from reidaug.train.config import TrainConfig

    assert TrainConfig.from_user({"amp": True, "soft_margin": True}).amp is True
    with pytest.raises(ConfigError, match="not a boolean"):
        TrainConfig.from_user({"epochs": True})


@pytest.mark.parametrize("override", ["stages.train-reid.params.seed=100000000000000000000000000",
                                      "stages.train-camstyle.params.iterations=100000000000000000000000000",
                                      "stages.train-reid.params.epochs=100000000000000000000000000",
                                      "stages.train-reid.params.p=100000000000000000000000000",
                                      "stages.train-reid.params.lr=1e26",
                                      "execution.workers=100000000000000000000000000"])
def test_absurd_numbers_fail_when_the_yaml_loads(override):
    # 10^26 passed --dry-run for seed, iterations, epochs, p, k, lr, workers; the seed failed at run time
    from reidaug.pipeline.graph import build_graph
    from reidaug.stages import STAGES

    with pytest.raises(ConfigError, match="less than or equal to"):
        build_graph(load_pipeline(Path(__file__).parents[3] / "configs" / "demo.yaml", overrides=[override]), STAGES)


@pytest.mark.parametrize("override, words", [
    ("stages.train-camstyle.params.log_every=100000000000000000000000000", r"at most 2\^32"),  # no `le` of its own
    ("stages.score-posegan.params.num_pairs=1000000000000000000000000000000", r"at most 2\^32"),
    ("stages.train-reid.params.warmup_epochs=.inf", "finite"),
    ("stages.train-reid.params.lr=.nan", "nan"),
    ("stages.train-reid.params.milestones=[1, 100000000000000000000000000]", r"at most 2\^32"),  # in a list
])
def test_every_number_is_bounded_and_finite_even_without_declared_bounds(override, words):
    from reidaug.pipeline.graph import build_graph
    from reidaug.stages import STAGES

    with pytest.raises(ConfigError, match=words):
        build_graph(load_pipeline(Path(__file__).parents[3] / "configs" / "demo.yaml", overrides=[override]), STAGES)


def test_numbers_inside_dict_values_are_bounded_too():
    from typing import Any

    from pydantic import ValidationError

    from reidaug.validation import StrictNumbers

    class Opts(StrictNumbers):
        options: dict[str, Any] = {}

    assert Opts(options={"seed": 2**32 - 1}).options["seed"] == 2**32 - 1  # a 32-bit seed still fits
    for bad in ({"x": 1e300}, {"x": [float("nan")]}, {"x": {"y": float("-inf")}}):
        with pytest.raises(ValidationError):
            Opts(options=bad)


@pytest.mark.parametrize("text,where,expected", [
    ("name: t\nstages:\n  ingest:\n    params: {format: market1501}\n", "p.yaml:3:3", "ingest needs a dataset"),
    ("name: t\nexecution: {scheduler: 'tcp://'}\nstages:\n  selftest-source: {}\n", "p.yaml:2:",
     "names no host"),
])
def test_pipelines_that_cannot_run_fail_when_the_yaml_loads(tmp_path, text, where, expected):
    from reidaug.pipeline.graph import build_graph
    from reidaug.stages import STAGES

    p = tmp_path / "p.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        build_graph(load_pipeline(p), STAGES)
    assert where in str(info.value) and expected in str(info.value)


def test_canonical_targets_without_cluster_poses_fail_at_load_not_after_training(tmp_path):
    from reidaug.pipeline.graph import build_graph
    from reidaug.stages import STAGES

    demo = (Path(__file__).parents[3] / "configs" / "demo.yaml").read_text()
    p = tmp_path / "p.yaml"
    p.write_text(demo.replace("  cluster-poses:\n", "  unused-clusters:\n    uses: cluster-poses\n"))
    with pytest.raises(ConfigError, match=r"stages.generate-poseguided: params.targets is 'canonical'"):
        build_graph(load_pipeline(p), STAGES)
