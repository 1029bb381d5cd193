"""One base for the GAN models: nets by name, optimisers, schedulers, device, state round-trip.

In the spirit of CycleGAN's ``BaseModel`` (junyanz/pytorch-CycleGAN-and-pix2pix,
``models/base_model.py``): a model file (:mod:`.cyclegan`, :mod:`.stargan`, :mod:`.pg2`,
:mod:`.deformable`) keeps its paper's maths (networks, losses, one training step, inference);
:class:`GANModel` keeps the plumbing they all share, written once:

- ``self.nets``: an ``nn.ModuleDict`` of every trained network; ``G = net()`` in the class body
  reads ``self.nets["G"]`` (the paper's names, without a property per network).
- :meth:`GANModel.add_optimizer`: Adam with the config's betas, registered by name and readable
  as ``self.optimizer_<name>``; :meth:`GANModel.add_linear_decay`: CycleGAN's linear LR policy
  for every optimiser, stepped by :meth:`GANModel.step_schedulers` once per epoch.
- :meth:`GANModel.add_state`: anything else a bit-identical resume needs (image pools, seeded
  ``torch.Generator``\\ s), saved under its name.
- :meth:`GANModel.to` (device, dtype or ``memory_format=torch.channels_last``; optimiser state
  follows), :meth:`GANModel.train` / :meth:`GANModel.eval`, :meth:`GANModel.eval_mode`
  (inference on some nets, previous mode restored).
- One checkpoint round trip: :meth:`GANModel.state_dict` (model name, config, step counters,
  nets, optimisers, schedulers, extra state), :meth:`GANModel.load_state_dict` (refuses another
  model's checkpoint or another config with a clear error; deep-copies optimiser state, so the
  caller's snapshot survives further training), :meth:`GANModel.from_state_dict`.
- :class:`GANConfig`: what every frozen config dataclass shares (``size``, ``as_dict``,
  ``check_at_least`` for ``__post_init__`` validation).

Constructors place nothing on a device (call ``.to``) and touch no global RNG: weights come from
a ``torch.Generator`` seeded with ``config.seed``.

A new model (e.g. LSRO's unconditional DCGAN) is a config dataclass on :class:`GANConfig` and a
:class:`GANModel` subclass with its nets, ``configure_optimizers``, ``training_step`` and inference:
docs/adding-a-generator.md walks through one, and ``ToyGAN`` in tests/unit/models/test_base.py is
the smallest runnable example.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from reidaug.errors import ConfigError

from .gan_common import bce_gan_loss, linear_decay_lambda

M = TypeVar("M", bound="GANModel")


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class GANConfig:
    """Base of the models' frozen config dataclasses: the fields every GAN here shares (Adam's
    betas, the N(0, gain) init, the seed of every generator), validated once.

    Subclasses add their own fields after these (so a checkpoint's ``config`` dict lists these
    four first) and call ``super().__post_init__()`` from their own ``__post_init__``. They
    must define ``image_height`` and ``image_width``.
    """

    beta1: float = 0.5  # Adam (every paper here: DCGAN's 0.5, 0.999)
    beta2: float = 0.999
    init_gain: float = 0.02  # N(0, gain) conv / linear weights (DCGAN, CycleGAN, tflib)
    seed: int = 0  # weights, pools, dropout: no global RNG is touched

    def __post_init__(self) -> None:
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{type(self).__name__}.{name} must be in [0, 1), found "
                                  f"{getattr(self, name)}. Fix: Adam's betas, e.g. 0.5 and 0.999.")
        self.check_at_least(0, "init_gain", "seed")

    @property
    def size(self) -> tuple[int, int]:
        """``(image_height, image_width)``: the crop size the model trains on."""
        return (self.image_height, self.image_width)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]  # subclasses are dataclasses

    def check_at_least(self, minimum: float, *names: str) -> None:
        """Raise :class:`ConfigError` unless each named field is ``>= minimum`` (NaN fails)."""
        for name in names:
            value = getattr(self, name)
            if not value >= minimum:
                raise ConfigError(f"{type(self).__name__}.{name} must be >= {minimum}, found "
                                  f"{value}.")


class PoseMapsConfig:
    """Mixin (no fields) of the pose-guided configs (PG2, Deformable GAN): the heatmap width rule.

    The config declares ``heatmap_sigma: float | None`` (output pixels; ``None``: 6 * H / 128,
    pose-gan's 6 at 128 rows) and calls :meth:`check_heatmap_sigma` in ``__post_init__``.
    """

    @property
    def sigma(self) -> float:
        """The Gaussian heatmaps' standard deviation in output pixels."""
        sigma = self.heatmap_sigma  # type: ignore[attr-defined]
        return sigma if sigma is not None else 6.0 * self.image_height / 128  # type: ignore[attr-defined]

    def check_heatmap_sigma(self) -> None:
        sigma = self.heatmap_sigma  # type: ignore[attr-defined]
        if sigma is not None and not sigma > 0:
            raise ConfigError(f"{type(self).__name__}.heatmap_sigma must be > 0 (output pixels) or None, "
                              f"found {sigma}. Fix: e.g. 6 at 128 x 64, or None for 6 * H / 128.")


def check_config_dict(saved: dict[str, Any], current: dict[str, Any], model: str,
                      defaults: dict[str, Any] | None = None) -> None:
    """Raise :class:`ConfigError` if a checkpoint's config differs from the model's. A field the
    checkpoint lacks (added to the config after it was written) counts as its value in
    ``defaults``, so an older checkpoint still resumes."""
    saved = {**(defaults or {}), **saved}
    diff = {k: (saved.get(k), current.get(k)) for k in set(saved) | set(current)
            if saved.get(k) != current.get(k)}
    if diff:
        items = ", ".join(f"{k}: saved {a!r} vs model {b!r}" for k, (a, b) in sorted(diff.items()))
        raise ConfigError(f"{model} checkpoint was saved with a different config ({items}). "
                          f"Fix: build the model with {model}.from_state_dict(state).")


# --------------------------------------------------------------------------------------------
# State helpers
# --------------------------------------------------------------------------------------------
def move_optimizer_state(optimizers: Iterable[torch.optim.Optimizer]) -> None:
    """After moving the networks, move each optimiser's state tensors to their parameter's
    device (Adam's ``step`` counters stay on the CPU, as Adam expects)."""
    for opt in optimizers:
        for param, state in opt.state.items():
            for k, v in state.items():
                if isinstance(v, torch.Tensor) and k != "step":
                    state[k] = v.to(param.device)


def clone_state(state: dict[str, Any]) -> dict[str, Any]:
    """A deep, independent copy of a model ``state_dict()`` made through ``torch.save`` (what
    a checkpoint on disk holds), e.g. to keep a snapshot while training goes on."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _get_state(obj: Any) -> Any:
    return obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()


def _set_state(obj: Any, state: Any) -> None:
    if isinstance(obj, torch.Generator):
        obj.set_state(state)
    else:
        obj.load_state_dict(state)


# --------------------------------------------------------------------------------------------
# Nets by name
# --------------------------------------------------------------------------------------------
class _NetByName:
    """Class-body descriptor: reads ``instance.nets[name]`` (name = the attribute's name)."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name

    def __set_name__(self, owner: type, name: str) -> None:
        if self.name is None:
            self.name = name

    def __get__(self, instance: GANModel | None, owner: type) -> Any:
        if instance is None:
            return self
        return instance.nets[self.name]


def net(name: str | None = None) -> Any:
    """``G_AB = net()`` in a :class:`GANModel` subclass: ``self.G_AB`` is ``self.nets["G_AB"]``
    (``name`` when the attribute and the key differ)."""
    return _NetByName(name)


# --------------------------------------------------------------------------------------------
# The base
# --------------------------------------------------------------------------------------------
class GANModel:
    """Networks, optimisers, schedulers and resumable state of one GAN (see the module
    docstring for the template). Subclasses set the class attributes below, build their nets in
    ``__init__`` after ``super().__init__(config)``, and register optimisers in
    ``configure_optimizers``."""

    name: ClassVar[str]  # the checkpoint's "model" value
    title: ClassVar[str]  # the model's name in messages ("Deformable GAN")
    config_class: ClassVar[type]
    counters: ClassVar[tuple[str, ...]] = ("step",)  # int attributes saved in the checkpoint

    def __init__(self, config: Any = None) -> None:
        if config is None:
            config = self.config_class()
        elif not isinstance(config, self.config_class):
            raise ConfigError(f"{type(self).__name__} needs a {self.config_class.__name__}, found "
                              f"{type(config).__name__}. Fix: pass "
                              f"{self.config_class.__name__}(...) or None for the defaults.")
        self.config = config
        self.nets = nn.ModuleDict()
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: list[torch.optim.lr_scheduler.LambdaLR] = []
        self.extra_state: dict[str, Any] = {}  # name -> torch.Generator or .state_dict() object
        for counter in self.counters:
            setattr(self, counter, 0)

    # -- registration -------------------------------------------------------------------------
    def configure_optimizers(self) -> None:
        """(Re)create the optimisers (and schedulers) with :meth:`add_optimizer`."""
        raise NotImplementedError(f"{type(self).__name__}.configure_optimizers")

    def add_optimizer(self, name: str, params: Iterable[nn.Parameter], lr: float
                      ) -> torch.optim.Adam:
        """Adam(``lr``, betas ``(config.beta1, config.beta2)``) as ``self.optimizer_<name>``,
        saved under ``"optimizer_<name>"``; registering a name again replaces it."""
        opt = torch.optim.Adam(params, lr=lr, betas=(self.config.beta1, self.config.beta2))
        self.optimizers[name] = opt
        setattr(self, f"optimizer_{name}", opt)
        return opt

    def add_linear_decay(self, n_epochs: int, n_epochs_decay: int) -> None:
        """CycleGAN's linear policy (:class:`~.gan_common.LinearDecay`) on every optimiser
        registered so far, in registration order (replacing earlier schedulers)."""
        self.schedulers = [
            torch.optim.lr_scheduler.LambdaLR(
                opt, lr_lambda=linear_decay_lambda(n_epochs, n_epochs_decay))
            for opt in self.optimizers.values()]

    def update(self, name: str, loss: torch.Tensor) -> None:
        """One step of ``optimizer_<name>`` on ``loss``: zero its gradients, backward, step.
        (Zeroing after the forward pass equals zeroing before it: a forward writes no
        gradients.)"""
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def update_bce_discriminator(self, real_logits: torch.Tensor, fake_logits: torch.Tensor,
                                 name: str = "D") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """DCGAN's discriminator step: BCE on real (target 1) and fake (target 0) logits, halved,
        then :meth:`update` of optimiser ``name``. Returns ``(real, fake, total)`` losses. The
        caller computes the logits after ``set_requires_grad([D], True)`` and with the fakes
        detached."""
        d_real, d_fake = bce_gan_loss(real_logits, True), bce_gan_loss(fake_logits, False)
        d_loss = 0.5 * (d_real + d_fake)
        self.update(name, d_loss)
        return d_real, d_fake, d_loss

    @staticmethod
    def as_floats(losses: dict[str, torch.Tensor]) -> dict[str, float]:
        """A training step's losses as Python floats (what a loss log records)."""
        return {k: float(v.detach()) for k, v in losses.items()}

    def add_state(self, name: str, obj: Any) -> Any:
        """Save ``obj`` (a ``torch.Generator``, or anything with ``state_dict`` /
        ``load_state_dict``, e.g. an image pool) under ``name``; returns it."""
        self.extra_state[name] = obj
        return obj

    # -- device and mode ----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.nets.parameters()).device

    def step_schedulers(self) -> float:
        """End of an epoch: decay the learning rates; returns the first optimiser's new lr."""
        for s in self.schedulers:
            s.step()
        return float(next(iter(self.optimizers.values())).param_groups[0]["lr"])

    def to(self: M, *args: Any, **kwargs: Any) -> M:
        """Move / cast the networks (``nn.Module.to`` arguments: a device, a dtype,
        ``memory_format=torch.channels_last``); optimiser state moves with them."""
        self.nets.to(*args, **kwargs)
        move_optimizer_state(self.optimizers.values())
        return self

    def train(self: M, mode: bool = True) -> M:
        self.nets.train(mode)
        return self

    def eval(self: M) -> M:
        return self.train(False)

    @contextlib.contextmanager
    def eval_mode(self, *nets: nn.Module) -> Iterator[None]:
        """Run the block with ``nets`` (default: all) in eval mode, then restore each one's
        mode."""
        modules = nets or tuple(self.nets.values())
        was_training = [m.training for m in modules]
        for m in modules:
            m.eval()
        try:
            yield
        finally:
            for m, mode in zip(modules, was_training, strict=True):
                m.train(mode)

    def generator_weights(self) -> dict[str, torch.Tensor]:
        """CPU copies of the generators' weights (every net whose name starts with ``G``, keys
        as in ``nets.state_dict()``): what inference needs."""
        return {k: v.detach().cpu().clone() for k, v in self.nets.state_dict().items()
                if k.startswith("G")}

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a bit-identical resume needs (tensors are live references: save it with
        ``torch.save`` or :func:`clone_state` it before training on)."""
        state: dict[str, Any] = {"model": self.name, "config": dataclasses.asdict(self.config)}
        state.update({c: getattr(self, c) for c in self.counters})
        state["nets"] = self.nets.state_dict()
        state.update({f"optimizer_{k}": opt.state_dict() for k, opt in self.optimizers.items()})
        if self.schedulers:
            state["schedulers"] = [s.state_dict() for s in self.schedulers]
        state.update({k: _get_state(obj) for k, obj in self.extra_state.items()})
        return state

    @classmethod
    def check_model_name(cls, state: Any) -> None:
        """Raise :class:`ConfigError` unless ``state`` is a checkpoint of this model."""
        found = state.get("model") if isinstance(state, dict) else type(state).__name__
        if found != cls.name:
            raise ConfigError(f"not a {cls.title} checkpoint (model = {found!r}, expected "
                              f"{cls.name!r}). Fix: load it with the model class that saved it.")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; raises :class:`ConfigError` if it is another model's,
        was saved with another config, or lacks a part."""
        self.check_model_name(state)
        missing = [k for k in self.state_dict() if k not in state]
        if missing:
            raise ConfigError(f"{self.title} checkpoint lacks {missing} (it has {sorted(state)})."
                              " Fix: resume from a checkpoint this version wrote, or start afresh.")
        defaults = {f.name: f.default for f in dataclasses.fields(self.config_class)
                    if f.default is not dataclasses.MISSING}
        check_config_dict(state["config"], dataclasses.asdict(self.config), type(self).__name__, defaults)
        self.nets.load_state_dict(state["nets"])
        # Deep copies: Optimizer.load_state_dict keeps the given tensors when dtype and device
        # match, and Adam then updates them in place, which would change the caller's snapshot.
        for k, opt in self.optimizers.items():
            opt.load_state_dict(copy.deepcopy(state[f"optimizer_{k}"]))
        for s, s_state in zip(self.schedulers, state.get("schedulers", []), strict=True):
            s.load_state_dict(s_state)
        for k, obj in self.extra_state.items():
            _set_state(obj, state[k])
        for c in self.counters:
            setattr(self, c, int(state[c]))

    @classmethod
    def from_state_dict(cls: type[M], state: dict[str, Any], **kwargs: Any) -> M:
        """Build a model with the checkpoint's own config (``kwargs`` go to the constructor)
        and load it."""
        cls.check_model_name(state)
        known = {f.name for f in dataclasses.fields(cls.config_class)}
        unknown = sorted(set(state["config"]) - known)
        if unknown:
            raise ConfigError(f"{cls.title} checkpoint config has fields this version does not "
                              f"know: {unknown}. Fix: load it with the version that wrote it.")
        model = cls(cls.config_class(**state["config"]), **kwargs)
        model.load_state_dict(state)
        return model
