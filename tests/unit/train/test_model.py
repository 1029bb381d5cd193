"""Backbones (weights loading, clear errors) and the re-ID heads (shapes, BNNeck, save/load)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from reidaug.errors import ConfigError, DataError, DependencyError, UnknownNameError
from reidaug.train.backbones import (
    build_backbone,
    bundled_lite0_weights,
    imagenet_classifier,
    load_state_file,
)
from reidaug.train.model import ModelConfig, ReIDModel, build_model, load_model, save_model

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _grace_hopper() -> torch.Tensor:
    """matplotlib's sample photo (Grace Hopper in uniform), centre crop 224, ImageNet-normalised."""
    import cv2
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        pytest.skip(f"matplotlib sample photo not found at {path}")
    img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    img = cv2.resize(img, (224, 224), interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    return (x - IMAGENET_MEAN) / IMAGENET_STD


def test_efficientnet_lite0_options_reach_the_net_and_survive_save_and_load(tmp_path: Path) -> None:
    try:
        bundled_lite0_weights()
    except DependencyError as exc:
        pytest.skip(str(exc))
    x = torch.randn(2, 3, 64, 32)
    own = build_model(ModelConfig("efficientnet_lite0", 4), "imagenet").eval()
    opts = {"drop_path": 0.0, "bn_momentum": 0.1, "input_scale": "imagenet"}
    other = build_model(ModelConfig("efficientnet_lite0", 4, backbone_options=opts), "imagenet").eval()
    assert own.backbone._bn0.momentum == 0.01 and other.backbone._bn0.momentum == 0.1  # TF's vs torch's
    assert own.backbone._blocks[-1].drop_rate > 0.18 and other.backbone._blocks[-1].drop_rate == 0.0
    other.load_state_dict(own.state_dict())  # the same weights: only the input scale differs at eval
    with torch.no_grad():
        assert not torch.allclose(own(x), other(x))
        # "pretrained" feeds the weights (p - 127) / 128; "imagenet" the mean/std-normalised input as is
        lite = (x * IMAGENET_STD * 255 + IMAGENET_MEAN * 255 - 127) / 128
        assert torch.allclose(own(x), other(lite), atol=1e-5)
    save_model(other, tmp_path / "m.pt")
    back = load_model(tmp_path / "m.pt")
    assert back.config.backbone_options == opts and back.backbone.input_scale == "imagenet"
    assert "backbone_options" not in own.config.to_dict()  # a default model's file as before
    with pytest.raises(ConfigError, match="backbone tiny has no option drop_path"):
        build_model(ModelConfig("tiny", 4, backbone_options={"drop_path": 0.1}), "none")


def test_efficientnet_lite0_imagenet_weights_load_strict_and_classify_a_photo() -> None:
    try:
        path = bundled_lite0_weights()
    except DependencyError as exc:
        pytest.skip(str(exc))
    bb = build_backbone("efficientnet_lite0", "imagenet", last_stride=2)  # strict load inside
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = bb.state_dict()
    assert set(own) == {k for k in state if not k.startswith("_fc.")}
    assert all(torch.equal(own[k], state[k]) for k in own)
    net = imagenet_classifier(bb, path).eval()
    with torch.no_grad():
        probs = net(_grace_hopper()).softmax(1)[0]  # (1000,)
    from torchvision.models import ResNet50_Weights

    categories = ResNet50_Weights.IMAGENET1K_V2.meta["categories"]
    top = int(probs.argmax())
    # The classic sanity check of ImageNet models on this photo.
    assert categories[top] == "military uniform", categories[top]
    assert probs[top] > 0.2  # far from uniform (0.001)


def test_resnet_imagenet_without_local_weights_says_where_to_get_them() -> None:
    with pytest.raises(DependencyError, match=r"download\.pytorch\.org/models/resnet50.*--pretrained PATH"):
        build_backbone("resnet50", "imagenet")


def test_unknown_backbone_lists_the_known_ones() -> None:
    with pytest.raises(UnknownNameError, match=r'Did you mean "resnet50"'):
        build_backbone("resnet05", "none")


def test_user_weights_path_loads_and_mismatch_lists_keys(tmp_path: Path) -> None:
    from torchvision.models import resnet18

    torch.manual_seed(1)
    ref = resnet18(weights=None)  # stands in for a user's ImageNet file (with its fc layer)
    good = tmp_path / "r18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, good)
    bb = build_backbone("resnet18", str(good))
    assert torch.equal(bb.conv1.weight, ref.conv1.weight)
    assert torch.equal(bb.layer4[1].bn2.running_var, ref.layer4[1].bn2.running_var)

    bad_state = {k: v for k, v in ref.state_dict().items() if not k.startswith("layer4.1.")}
    bad_state["extra.weight"] = torch.zeros(3)
    bad = tmp_path / "bad.pth"
    torch.save(bad_state, bad)
    with pytest.raises(DataError) as err:
        build_backbone("resnet18", str(bad))
    msg = str(err.value)
    assert "12 missing keys" in msg and "layer4.1.bn1.weight" in msg
    assert "unexpected keys: extra.weight" in msg and str(bad) in msg

    with pytest.raises(ConfigError, match="does not exist"):
        build_backbone("resnet18", str(tmp_path / "nope.pth"))


@pytest.mark.parametrize("name,dim", [("resnet18", 512), ("efficientnet_lite0", 1280), ("tiny", 128)])
def test_backbone_feature_maps(name: str, dim: int) -> None:
    bb = build_backbone(name, "none").eval()
    with torch.no_grad():
        fmap = bb(torch.randn(2, 3, 64, 32))
    # last_stride=1 (the default): /16 for ResNets and Lite0, /8 for the tiny test net.
    expect = (2, dim, 8, 4) if name == "tiny" else (2, dim, 4, 2)
    assert tuple(fmap.shape) == expect


def test_resnet50_builds_with_2048_features() -> None:
    assert build_backbone("resnet50", None).out_dim == 2048


def test_heads_train_and_eval_outputs() -> None:
    x = torch.randn(4, 3, 64, 32)
    for head, bottleneck, feat_dim in (("bnneck", None, 128), ("ide", "fc1024", 128), ("ide", "bn", 128),
                                       ("triplet", None, 128)):
        torch.manual_seed(0)
        m = ReIDModel(build_backbone("tiny", "none"), num_classes=7, head=head, bottleneck=bottleneck)
        m.train()
        logits, feats = m(x)
        assert feats.shape == (4, feat_dim)
        if head == "triplet":
            assert logits is None
        else:
            assert logits.shape == (4, 7)
        m.eval()
        with torch.no_grad():
            f = m(x)
        assert isinstance(f, torch.Tensor) and f.shape == (4, m.feature_dim)


def test_bnneck_structure_and_eval_feature_is_post_bn() -> None:
    torch.manual_seed(0)
    m = ReIDModel(build_backbone("tiny", "none"), num_classes=5, head="bnneck")
    assert m.classifier.bias is None  # bias-free classifier
    assert not m.bottleneck.bias.requires_grad  # BN shift frozen at 0
    x = torch.randn(6, 3, 64, 32)
    m.train()
    m(x)  # update running stats so eval BN is not the identity
    m.eval()
    with torch.no_grad():
        pooled = m.pool(m.backbone(x)).flatten(1)
        assert torch.allclose(m(x), m.bottleneck(pooled), atol=1e-6)
        assert not torch.allclose(m(x), pooled, atol=1e-3)


def test_head_bottleneck_combinations_are_checked() -> None:
    with pytest.raises(ConfigError, match="bnneck"):
        ModelConfig(backbone="tiny", num_classes=3, head="bnneck", bottleneck="fc1024")
    with pytest.raises(UnknownNameError):
        ModelConfig(backbone="tiny", num_classes=3, head="softmax")


def test_save_and_load_model_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="tiny", num_classes=4, head="ide", bottleneck="fc1024", input_size=(64, 32))
    m = build_model(cfg, "none").eval()
    save_model(m, tmp_path / "model.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temp file left
    back = load_model(tmp_path)
    assert back.config == cfg and not back.training
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        assert torch.equal(m(x), back(x))
    with pytest.raises(DataError, match="no trained model"):
        load_model(tmp_path / "elsewhere")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="not a reidaug model file"):
        load_model(tmp_path / "other.pt")


def test_load_state_file_refuses_pickled_objects(tmp_path: Path) -> None:
    p = tmp_path / "obj.pth"
    torch.save({"x": np.arange(3).astype(object)}, p)
    with pytest.raises(DataError, match="cannot read weights file"):
        load_state_file(p)
