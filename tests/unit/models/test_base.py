"""The GAN base (models/base.py): a tiny subclass (the smallest example of a model on it); the
state round trip, clear errors for another model's or another config's checkpoint, ``to()``
moving optimiser state, eval_mode, the config checks."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from reidaug.errors import ConfigError
from reidaug.models.base import GANConfig, GANModel, clone_state, net
from reidaug.models.gan_common import bce_gan_loss, init_weights, set_requires_grad

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass(frozen=True)
class ToyConfig(GANConfig):
    image_height: int = 8
    image_width: int = 4
    nz: int = 4
    lr: float = 1e-2
    n_epochs: int = 1
    n_epochs_decay: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_at_least(1, "image_height", "image_width", "nz")
        self.check_at_least(0, "lr")


class ToyGAN(GANModel):
    """An unconditional GAN on 3 x 8 x 4 images: the smallest model on the base (docs/adding-a-generator.md)."""

    name = "toy"
    title = "Toy GAN"
    config_class = ToyConfig
    G = net()
    D = net("D")

    def __init__(self, config: ToyConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        pixels = 3 * cfg.image_height * cfg.image_width
        self.nets.update({"G": init_weights(nn.Sequential(nn.Linear(cfg.nz, pixels), nn.Tanh()),
                                            cfg.init_gain, gen),
                          "D": init_weights(nn.Linear(pixels, 1), cfg.init_gain, gen)})
        self.noise = self.add_state("noise", torch.Generator().manual_seed(cfg.seed + 1))
        self.configure_optimizers()

    def configure_optimizers(self) -> None:
        self.add_optimizer("G", self.G.parameters(), self.config.lr)
        self.add_optimizer("D", self.D.parameters(), self.config.lr)
        self.add_linear_decay(self.config.n_epochs, self.config.n_epochs_decay)

    def training_step(self, real: torch.Tensor) -> dict[str, float]:  # real (B, 3*H*W)
        self.train()
        z = torch.randn(real.shape[0], self.config.nz, generator=self.noise).to(real)  # (B, nz)
        fake = self.G(z)
        set_requires_grad([self.D], False)
        g = bce_gan_loss(self.D(fake), True)
        self.update("G", g)
        set_requires_grad([self.D], True)
        _, _, d = self.update_bce_discriminator(self.D(real), self.D(fake.detach()))
        self.step += 1
        return self.as_floats({"G": g, "D": d})


def real_batch(seed: int) -> torch.Tensor:
    return torch.rand(4, 3 * 8 * 4, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def run(model: ToyGAN, steps: range) -> None:
    for i in steps:
        model.training_step(real_batch(i))
        if i % 2:
            model.step_schedulers()


def test_a_tiny_subclass_trains_and_names_its_parts() -> None:
    model = ToyGAN()
    assert model.G is model.nets["G"] and model.D is model.nets["D"]
    assert model.optimizer_G is model.optimizers["G"] and len(model.schedulers) == 2
    losses = model.training_step(real_batch(0))
    assert set(losses) == {"G", "D"} and all(isinstance(v, float) for v in losses.values())
    assert model.step == 1
    assert model.step_schedulers() == pytest.approx(1e-2 * 2 / 3)  # linear decay, epoch 1
    assert set(model.generator_weights()) == {"G.0.weight", "G.0.bias"}


def test_state_round_trip_is_bit_identical(resume_matches) -> None:
    straight, resumed, saved = resume_matches(ToyGAN, run, 5, 3)
    assert list(saved) == ["model", "config", "step", "nets", "optimizer_G", "optimizer_D",
                           "schedulers", "noise"]
    assert resumed.step == straight.step == 5
    assert torch.equal(resumed.noise.get_state(), straight.noise.get_state())
    assert resumed.schedulers[0].last_epoch == straight.schedulers[0].last_epoch
    # Loading deep-copies the optimiser state: training on leaves the snapshot as it was.
    before = clone_state(saved)
    run(ToyGAN.from_state_dict(saved), range(3, 5))
    assert all(torch.equal(a, b) for a, b in zip(
        before["optimizer_G"]["state"][0].values(), saved["optimizer_G"]["state"][0].values(),
        strict=True))


def test_another_models_checkpoint_is_refused_clearly() -> None:
    state = ToyGAN().state_dict()
    with pytest.raises(ConfigError, match=r"not a Toy GAN checkpoint \(model = 'cyclegan'"):
        ToyGAN().load_state_dict({**state, "model": "cyclegan"})
    with pytest.raises(ConfigError, match="not a Toy GAN checkpoint"):
        ToyGAN.from_state_dict({**state, "model": "pg2"})
    with pytest.raises(ConfigError, match="not a Toy GAN checkpoint"):
        ToyGAN().load_state_dict([1, 2])  # type: ignore[arg-type]


def test_another_config_or_a_partial_checkpoint_is_refused_clearly() -> None:
    state = ToyGAN().state_dict()
    with pytest.raises(ConfigError, match=r"nz: saved 4 vs model 8.*ToyGAN.from_state_dict"):
        ToyGAN(ToyConfig(nz=8)).load_state_dict(state)
    with pytest.raises(ConfigError, match=r"lacks \['noise'\]"):
        ToyGAN().load_state_dict({k: v for k, v in state.items() if k != "noise"})
    with pytest.raises(ConfigError, match=r"does not know: \['extra'\]"):
        ToyGAN.from_state_dict({**state, "config": {**state["config"], "extra": 1}})
    with pytest.raises(ConfigError, match="needs a ToyConfig"):
        ToyGAN({"nz": 4})  # type: ignore[arg-type]


def test_to_keeps_the_optimiser_state_with_its_parameters() -> None:
    moved, kept = ToyGAN(), ToyGAN()
    run(moved, range(2))
    run(kept, range(2))
    assert moved.to(torch.device("cpu")) is moved
    for opt in moved.optimizers.values():
        for param, state in opt.state.items():
            assert state["exp_avg"].device == param.device
            assert state["step"].device.type == "cpu"  # Adam keeps its step counter on the CPU
    run(moved, range(2, 4))
    run(kept, range(2, 4))
    assert all(torch.equal(p, q) for p, q in zip(moved.nets.parameters(), kept.nets.parameters(),
                                                 strict=True))


@pytest.mark.gpu
def test_to_cuda_moves_the_optimiser_state_and_training_goes_on() -> None:
    model = ToyGAN()
    run(model, range(2))
    model.to("cuda")
    assert model.device.type == "cuda"
    for opt in model.optimizers.values():
        for state in opt.state.values():
            assert state["exp_avg"].device.type == "cuda" and state["step"].device.type == "cpu"
    model.training_step(real_batch(2).cuda())
    assert model.step == 3


def test_eval_mode_restores_each_nets_mode() -> None:
    model = ToyGAN().train()
    with model.eval_mode(model.G):
        assert not model.G.training and model.D.training
    assert model.G.training
    model.D.eval()
    with model.eval_mode():
        assert not model.G.training and not model.D.training
    assert model.G.training and not model.D.training


def test_config_checks() -> None:
    assert ToyConfig().size == (8, 4) and ToyConfig().as_dict()["nz"] == 4
    with pytest.raises(ConfigError, match=r"ToyConfig.nz must be >= 1, found 0"):
        ToyConfig(nz=0)
    with pytest.raises(ConfigError, match="ToyConfig.lr must be >= 0, found nan"):
        ToyConfig(lr=float("nan"))
