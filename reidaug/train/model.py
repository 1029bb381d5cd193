"""Re-ID model: backbone -> global average pooling -> bottleneck -> identity classifier.

Three heads:

- ``ide``: the ID-discriminative embedding baseline (Zheng et al., "Person Re-identification:
  Past, Present and Future", 2016; as trained by CamStyle, Zhong et al., CVPR 2018): pooled
  feature -> FC-1024 + BN + ReLU + dropout (``bottleneck="fc1024"``, the default) or a plain BN
  (``bottleneck="bn"``) -> classifier with bias. Test feature: the pooled backbone feature
  ("pool5"), as CamStyle evaluates it.
- ``triplet``: pooled feature only, no classifier (Hermans et al., "In Defense of the Triplet
  Loss for Person Re-Identification", 2017). Test feature: the pooled feature.
- ``bnneck``: the BNNeck of Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person
  Re-identification" (CVPRW 2019): pooled feature f_t (the triplet loss's) -> BN (its shift
  frozen at 0) -> f_i (the ID loss's) -> bias-free classifier. Test feature: f_i.

``forward`` returns :class:`ReIDOutput` ``(logits, features)`` in train mode (``logits`` is None
for the ``triplet`` head; ``features`` is the pooled, pre-bottleneck feature that a metric loss
uses) and the test feature tensor ``(B, D)`` in eval mode. :func:`save_model` /
:func:`load_model` store and rebuild a model with its config (``model.pt`` of a run).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from reidaug.errors import ConfigError, DataError, unknown_name
from reidaug.io.checkpoint import load_torch, save_torch
from reidaug.train.backbones import BACKBONES, Backbone, build_backbone
from reidaug.train.config import BOTTLENECKS, DEFAULT_BOTTLENECK, HEADS, bottleneck_error

MODEL_FILE_FORMAT = "reidaug-reid-model"
MODEL_FILE_VERSION = 1


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a :class:`ReIDModel` (weights aside)."""

    backbone: str
    num_classes: int
    head: str = "bnneck"
    bottleneck: str = "bn"
    dropout: float = 0.5  # fc1024 bottleneck only
    last_stride: int = 1
    input_size: tuple[int, int] = (256, 128)  # (H, W) the model was trained at
    #: backbone construction options that differ from the backbone's own (drop_path, bn_momentum,
    #: input_scale; see build_backbone); input_scale changes what the features are, so it is kept
    backbone_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise unknown_name("backbone", self.backbone, BACKBONES)
        if self.head not in HEADS:
            raise unknown_name("head", self.head, HEADS)
        if self.bottleneck not in BOTTLENECKS:
            raise unknown_name("bottleneck", self.bottleneck, BOTTLENECKS)
        why = bottleneck_error(self.head, self.bottleneck)
        if why:
            raise ConfigError(why)
        if self.head != "triplet" and self.num_classes < 1:
            raise ConfigError(f"head={self.head} needs num_classes >= 1; found {self.num_classes}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1); found {self.dropout}.")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input_size"] = list(self.input_size)
        if not self.backbone_options:
            del d["backbone_options"]  # a default model's file as before
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise DataError(f"model config has unknown keys {unknown}; written by a newer reidaug? Fix: upgrade.")
        d = dict(d)
        if "input_size" in d:
            d["input_size"] = tuple(int(v) for v in d["input_size"])
        return cls(**d)


class ReIDOutput(NamedTuple):
    """Train-mode output: ``logits`` (B, C) (None for the triplet head), ``features`` (B, D)."""

    logits: torch.Tensor | None
    features: torch.Tensor


class ReIDModel(nn.Module):
    """Backbone + GAP + bottleneck + classifier; see the module docstring for the heads.

    ``ReIDModel(backbone, num_classes, head="bnneck", bottleneck=None)`` with a built
    :class:`~reidaug.train.backbones.Backbone`; ``bottleneck=None`` picks the head's default
    (:data:`DEFAULT_BOTTLENECK`). No device placement here: the caller moves the model.
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        head: str = "bnneck",
        bottleneck: str | None = None,
        *,
        dropout: float = 0.5,
        input_size: tuple[int, int] = (256, 128),
        last_stride: int = 1,
        backbone_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise unknown_name("head", head, HEADS)
        self.config = ModelConfig(
            backbone=backbone.name,
            num_classes=int(num_classes),
            head=head,
            bottleneck=DEFAULT_BOTTLENECK[head] if bottleneck is None else bottleneck,
            dropout=float(dropout),
            last_stride=int(last_stride),
            input_size=(int(input_size[0]), int(input_size[1])),
            backbone_options=dict(backbone_options or {}),
        )
        cfg = self.config
        self.backbone = backbone
        self.pool = nn.AdaptiveAvgPool2d(1)
        d = backbone.out_dim
        self.bottleneck: nn.Module | None
        if cfg.bottleneck == "fc1024":
            fc = nn.Linear(d, 1024)
            nn.init.kaiming_normal_(fc.weight, mode="fan_out")
            nn.init.zeros_(fc.bias)
            self.bottleneck = nn.Sequential(fc, nn.BatchNorm1d(1024), nn.ReLU(inplace=True), nn.Dropout(cfg.dropout))
            emb = 1024
        elif cfg.bottleneck == "bn":
            bn = nn.BatchNorm1d(d)
            if cfg.head == "bnneck":
                bn.bias.requires_grad_(False)  # BNNeck: no shift, as Luo et al.
            self.bottleneck = bn
            emb = d
        else:
            self.bottleneck = None
            emb = d
        self.classifier: nn.Linear | None = None
        if cfg.head != "triplet":
            self.classifier = nn.Linear(emb, cfg.num_classes, bias=cfg.head != "bnneck")
            nn.init.normal_(self.classifier.weight, std=0.001)  # as torchreid / the strong baseline
            if self.classifier.bias is not None:
                nn.init.zeros_(self.classifier.bias)
        self.feature_dim = d  # dimension of the eval-mode feature (pool5 or BNNeck's f_i)

    def forward(self, x: torch.Tensor) -> ReIDOutput | torch.Tensor:
        fmap = self.backbone(x)  # (B, D, h, w)
        f_t = self.pool(fmap).flatten(1)  # (B, D): pooled feature (triplet loss, IDE test feature)
        if not self.training:
            if self.config.head == "bnneck":
                return self.bottleneck(f_t)  # (B, D): f_i, post-BN
            return f_t
        if self.classifier is None:
            return ReIDOutput(None, f_t)
        return ReIDOutput(self._classify(f_t), f_t)  # logits (B, C)

    def _classify(self, f_t: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) of pooled features (B, D): bottleneck (if any), then the classifier."""
        f_i = f_t if self.bottleneck is None else self.bottleneck(f_t)  # (B, D) or (B, 1024)
        return self.classifier(f_i)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Identity logits ``(B, C)`` in the module's current mode.

        ``forward`` gives logits in train mode only; a teacher (``predict_probs``) needs them in
        eval mode (BN running statistics, no dropout), which this gives. Column j is train label j.
        """
        if self.classifier is None:
            raise ConfigError(
                "this model has head=triplet: no classifier, so no identity logits. "
                "Fix: train the teacher with head bnneck or ide."
            )
        return self._classify(self.pool(self.backbone(x)).flatten(1))  # (B, C)


def build_model(config: ModelConfig, pretrained: str | os.PathLike[str] | None) -> ReIDModel:
    """A :class:`ReIDModel` from its config; ``pretrained`` as :func:`build_backbone` takes it."""
    backbone = build_backbone(config.backbone, pretrained, last_stride=config.last_stride,
                              options=config.backbone_options)
    return ReIDModel(
        backbone, config.num_classes, config.head, config.bottleneck,
        dropout=config.dropout, input_size=config.input_size, last_stride=config.last_stride,
        backbone_options=config.backbone_options,
    )


def save_model(model: ReIDModel, path: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> None:
    """Write ``{"format", "version", "model_config", "state_dict", **extra}`` atomically (CPU tensors)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    obj = {"format": MODEL_FILE_FORMAT, "version": MODEL_FILE_VERSION,
           "model_config": model.config.to_dict(), "state_dict": state}
    obj.update(extra or {})
    save_torch(path, obj)


def load_model(path: str | os.PathLike[str]) -> ReIDModel:
    """Rebuild a model saved by :func:`save_model`; ``path`` may be a run folder (its ``model.pt``).

    The model comes back on the CPU in eval mode.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "model.pt"
    if not p.is_file():
        raise DataError(
            f"no trained model at {p}. Fix: pass a run folder of a finished `reidaug train` "
            "(it holds model.pt) or the path of a model.pt."
        )
    obj = load_torch(p, "reidaug model file", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != MODEL_FILE_FORMAT:
        raise DataError(
            f"{p} is not a reidaug model file (format {obj.get('format') if isinstance(obj, dict) else None!r}, "
            f"expected {MODEL_FILE_FORMAT!r}). Fix: pass the model.pt of a reidaug run."
        )
    if obj.get("version") != MODEL_FILE_VERSION:
        raise DataError(
            f"{p}: model file version {obj.get('version')}, this reidaug reads {MODEL_FILE_VERSION}. "
            "Fix: use the reidaug version that trained it."
        )
    model = build_model(ModelConfig.from_dict(obj["model_config"]), pretrained="none")
    model.load_state_dict(obj["state_dict"], strict=True)
    return model.eval()
