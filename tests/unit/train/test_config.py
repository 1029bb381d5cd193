"""One training config, three entry points: every option of TrainConfig can be set, with the same
default and the same check, from the train-reid stage's YAML, from `reidaug train` (--set, a
flag, a --config file or an earlier run's config.json) and from Python; exactly the declared
options stay out of the stage's cache key and of the trainer's "same run?" comparison."""
from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from reidaug.cli_train import FLAGS, train_config
from reidaug.errors import ConfigError, ReidAugError
from reidaug.pipeline.config import load_pipeline
from reidaug.pipeline.graph import build_graph
from reidaug.stages import STAGES
from reidaug.stages.train_reid import SPEC, TrainReidParams
from reidaug.train.backbones import BACKBONES
from reidaug.train.config import NONSEMANTIC, Backbone, TrainConfig

PIPELINE = """\
name: config-test
stages:
  demo-data: {params: {num_ids: 4}}
  ingest: {params: {format: market1501}, inputs: {source: demo-data.dataset}}
  export-hdf5: {}
  train-reid: {}
"""
FIELDS = list(TrainConfig.model_fields)


def _stage_params(*sets: str) -> TrainReidParams:
    overrides = [f"stages.train-reid.params.{item}" for item in sets]
    return build_graph(load_pipeline(text=PIPELINE, overrides=overrides), STAGES).nodes["train-reid"].params


def _other_value(name: str) -> Any:
    """A valid value of option ``name`` other than its default (with every other option at its default)."""
    default = TrainConfig.model_fields[name].default
    candidates: list[Any]
    choices = [c for arg in typing.get_args(TrainConfig.model_fields[name].annotation)
               for c in (typing.get_args(arg) or (arg,)) if c is not type(None)]
    if name == "pretrained":
        candidates = ["none"]
    elif name == "threads":
        candidates = [1]
    elif name == "val_fraction":
        candidates = [0.15]
    elif name in ("drop_path", "backbone_bn_momentum"):  # null: the backbone's own
        candidates = [0.1]
    elif isinstance(default, bool):
        candidates = [not default]
    elif choices and all(isinstance(c, str) for c in choices):
        candidates = [c for c in choices if c != default]
    elif isinstance(default, int):
        candidates = [default + 1]
    elif isinstance(default, float):
        candidates = [default / 2]
    elif name == "milestones":
        candidates = [(30, 60)]
    else:  # sources
        candidates = [("real",)]
    for value in candidates:
        try:
            TrainConfig(**{name: value})
            return value
        except ValueError:
            continue
    raise AssertionError(f"no valid non-default value for {name} among {candidates}")


def test_defaults_are_the_same_everywhere() -> None:
    # one exception, on purpose: the stage pins torch's CPU threads (its results are cached, and the
    # weights differ by thread count), `reidaug train` uses the machine's cores
    assert TrainReidParams().train_config() == TrainConfig(threads=2)
    assert TrainConfig() == train_config(None, {}, ()) and TrainConfig().threads is None
    assert set(BACKBONES) == set(typing.get_args(Backbone))  # the torch-side registry has the same names


@pytest.mark.parametrize("name", FIELDS)
def test_every_option_is_settable_from_the_stage_yaml_and_from_reidaug_train(name: str) -> None:
    value = _other_value(name)
    text = yaml.safe_dump(list(value) if isinstance(value, tuple) else value, default_flow_style=True).strip()
    text = text.removesuffix("\n...").strip()
    expected = TrainConfig(**{name: value})
    assert getattr(expected, name) == value
    in_stage = expected if name == "threads" else expected.model_copy(update={"threads": 2})  # the stage pins 2
    assert _stage_params(f"{name}={text}").train_config() == in_stage
    assert train_config(None, {}, (f"{name}={text}",)) == expected
    if name in FLAGS.values():  # the flag is the same --set
        assert train_config(None, {name: text}, ()) == expected


def test_the_nonsemantic_options_are_exactly_the_declared_ones() -> None:
    from reidaug.train.trainer import _config_diff

    assert NONSEMANTIC == {"device", "deterministic", "num_workers", "worker_start", "checkpoint_every",
                           "checkpoint_unit", "log_every", "keep_checkpoint"}
    assert SPEC.ignored_in_key == NONSEMANTIC | {"eval_batch_size"}
    base = TrainConfig()
    for name in FIELDS:
        changed = TrainConfig(**{name: _other_value(name)})
        differs = bool(_config_diff(base.to_dict(), changed.to_dict()))
        assert differs == (name not in NONSEMANTIC), name
    # the stage's key follows the same split: only semantic options reach its key material
    # (the options added later, only once set: the shipped keys stay)
    later = {"threads", "val_fraction", "val_seed", "crop_pad", "drop_path", "backbone_bn_momentum", "input_scale"}
    assert TrainReidParams.UNKEYED_AT_DEFAULT == later
    assert set(SPEC.semantic_params(TrainReidParams())) == (set(TrainReidParams.model_fields) - SPEC.ignored_in_key
                                                             - later)
    assert SPEC.semantic_params(TrainReidParams(threads=1, val_fraction=0.1))["val_fraction"] == 0.1
    assert SPEC.semantic_params(TrainReidParams(crop_pad=5, input_scale="imagenet"))["crop_pad"] == 5
    # label_smoothing's default changed what a plain (one-hot) export trains to: keyed, except at 0,
    # what ran before it (a pipeline that says 0 keeps its cache); a run folder written before it
    # existed resumes as label_smoothing 0, not as the new default
    assert SPEC.semantic_params(TrainReidParams())["label_smoothing"] == 0.1
    assert "label_smoothing" not in SPEC.semantic_params(TrainReidParams(label_smoothing=0))
    old_run = {k: v for k, v in TrainConfig(label_smoothing=0).to_dict().items() if k != "label_smoothing"}
    assert _config_diff(old_run, TrainConfig(label_smoothing=0).to_dict()) == []
    assert _config_diff(old_run, TrainConfig().to_dict()) == ["label_smoothing: 0.0 -> 0.1"]


def test_batch_size_has_its_key_name_in_the_stage_and_its_old_name_in_run_files() -> None:
    # the pipeline leaves any param called batch_size out of keys; this one changes the weights
    assert "train_batch_size" in SPEC.semantic_params(TrainReidParams())
    c = TrainConfig.from_user({"batch_size": 32})
    assert c.train_batch_size == 32 and c == TrainConfig.from_user({"train_batch_size": 32})
    assert c.to_dict()["batch_size"] == 32 and "train_batch_size" not in c.to_dict()
    assert _stage_params("batch_size=32").train_batch_size == 32


def test_an_earlier_runs_config_json_is_a_valid_config(tmp_path: Path) -> None:
    saved = TrainConfig(backbone="tiny", sampler="random", train_batch_size=8, milestones=(3,), sources=("real",))
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"train": saved.to_dict(), "resolved": {"num_classes": 5}}))
    assert train_config(str(path), {}, ()) == saved
    assert train_config(str(path), {"epochs": "7"}, ("seed=3",)) == saved.model_copy(update={"epochs": 7, "seed": 3})


@pytest.mark.parametrize("option, value, message", [
    ("schedule", "cosin", 'unknown schedule "cosin". Did you mean "cosine"?'),
    ("head", "triplet", "loss='ide' needs a classifier, but head='triplet' has none"),
    ("bottleneck", "fc1024", "head=bnneck is a BN bottleneck by definition"),
    ("milestones", "[30, 10]", "milestones must increase; found [30, 10]"),
    ("sampler", "realfake", "real_per_batch + fake_per_batch == train_batch_size; found 48 + 16 vs 10"),
    ("epochs", "0", "greater than or equal to 1"),
    ("warmup_factor", "2", "less than or equal to 1"),
])
def test_a_bad_value_is_the_same_clear_error_from_each_entry_point(option: str, value: str, message: str) -> None:
    extra = ("train_batch_size=10",) if option == "sampler" else ()
    with pytest.raises(ReidAugError) as cli:
        train_config(None, {}, (f"{option}={value}", *extra))
    with pytest.raises(ConfigError) as stage:
        _stage_params(f"{option}={value}", *extra)
    assert message in str(cli.value) and message in str(stage.value), (str(cli.value), str(stage.value))
    assert str(cli.value).count("\n") == 0  # one line for the CLI
    assert "stages.train-reid.params" in str(stage.value)  # where in the pipeline (its YAML line, or the --set)


def test_set_values_are_read_as_the_pipeline_reads_them() -> None:
    # an empty value is the empty string in both (not null): bottleneck= is an error, bottleneck=null is not
    with pytest.raises(ReidAugError, match='unknown bottleneck ""'):
        train_config(None, {}, ("bottleneck=",))
    with pytest.raises(ConfigError, match="bottleneck"):
        _stage_params("bottleneck=")
    assert train_config(None, {}, ("bottleneck=null",)).bottleneck is None
    with pytest.raises(ConfigError, match="not valid YAML"):
        train_config(None, {}, ("milestones=[1,",))
    with pytest.raises(ConfigError, match="expected NAME=VALUE"):
        train_config(None, {}, ("epochs",))


def test_the_readme_cuhk01_command_is_the_campaigns_real_only_recipe() -> None:
    """`reidaug train` reproduces the campaign's strong baseline from flags alone (no --config):
    the same weights-changing options as the YAML's real-only arm with random erasing, except label
    smoothing, which the arm gets from its file (assign-labels real: lsr) and the command from the trainer."""
    import shlex

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("reidaug train cuhk01.h5"))
    args = shlex.split(line.split("#")[0])[3:]  # after "reidaug train DATA"
    flags, sets, i = {}, [], 0
    while i < len(args):
        name, value = args[i].removeprefix("--"), args[i + 1]
        if name == "set":
            sets.append(value)
        elif name in FLAGS:
            flags[FLAGS[name]] = value
        else:
            assert name == "out", name
        i += 2
    command = train_config(None, flags, tuple(sets)).to_dict()
    yaml_path = Path(__file__).resolve().parents[3] / "configs" / "ablations" / "cuhk01_campaign.yaml"
    import dataclasses

    # ingest's source fingerprint reads ../shared; the params compared here do not depend on it
    registry = dict(STAGES)
    registry["ingest"] = dataclasses.replace(STAGES["ingest"], fingerprint=lambda params, base_dir: "no-data")
    arm = build_graph(load_pipeline(yaml_path), registry).nodes["real-re-s0"].params.train_config().to_dict()
    assert command["schedule"] == arm["schedule"] == "cosine"  # so milestones (step's) change nothing
    differ = {k for k in command if command[k] != arm[k] and k not in NONSEMANTIC | {"milestones"}}
    assert differ == {"label_smoothing"}, differ
    assert (command["label_smoothing"], arm["label_smoothing"]) == (0.1, 0.0)
