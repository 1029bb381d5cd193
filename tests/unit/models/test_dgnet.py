"""DG-Net: code shapes, AdaIN, training steps and the warm-up, bit-identical resume, config errors."""
from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from reidaug.errors import ConfigError, DataError
from reidaug.models.dgnet import AppearanceEncoder, DGNet, DGNetConfig, frozen_call, gray

H, W = 32, 16
B = 4
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**overrides: object) -> DGNetConfig:
    base = dict(num_classes=5, image_height=H, image_width=W, app_backbone="tiny", app_pretrained="none",
                app_dim=8, struct_dim=4, n_res=1, mlp_dim=16, ndf=8, d_layers=2, d_res=1, d_scales=2,
                total_steps=10, warmup_start=0.2, warmup_length=0.2, lr_decay_at=0.5)
    base.update(overrides)
    return DGNetConfig(**base)


def images(seed: int, n: int = B) -> torch.Tensor:
    """(n, 3, H, W) in [-1, 1]: a coloured 'person' block on noise, different per seed."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, H, W, generator=g) * 0.4 - 0.2
    colour = torch.rand(n, 3, 1, 1, generator=g) * 1.6 - 0.8
    x[:, :, 6:26, 4:12] += colour
    return x.clamp(-1, 1)


def batch(i: int) -> tuple[torch.Tensor, ...]:
    """Step i's (x, x_pos, x_other, y, y_other): the same data whichever run asks."""
    g = torch.Generator().manual_seed(100 + i)
    y = torch.randperm(5, generator=g)[:B]
    y_other = (y + 1 + torch.randint(0, 4, (B,), generator=g)) % 5  # always another identity
    return images(3 * i), images(3 * i + 1), images(3 * i + 2), y, y_other


def test_code_and_image_shapes() -> None:
    model = DGNet(tiny_config())
    x, x_pos = images(0), images(1)
    a, s = model.encode_appearance(x), model.encode_structure(x)
    assert a.shape == (B, 8)
    assert s.shape == (B, 32, H // 4, W // 4) and model.config.s_channels == 32
    out = model.decode(a, s)
    assert out.shape == (B, 3, H, W) and out.abs().max() <= 1
    assert model.identity_logits(x).shape == (B, 5)
    model.train()
    swapped = model.swap(x, x_pos)
    assert swapped.shape == (B, 3, H, W) and swapped.abs().max() <= 1
    assert all(m.training for m in model.nets.modules())  # swap restored the training mode
    # row k: appearance of x[k], structure of x_pos[k] (eval mode: rows do not interact)
    k = 2
    one = model.decode(model.encode_appearance(x[k:k + 1]), model.encode_structure(x_pos[k:k + 1]))
    assert torch.allclose(swapped[k:k + 1], one, atol=1e-6)
    # the structure code sees the grey image only: a colour permutation does not change it
    assert torch.allclose(model.encode_structure(x[:, [2, 0, 1]]), s, atol=1e-4)  # float sums' order
    # fully convolutional apart from E_a's pooling: other sizes (multiples of 4) work at inference
    assert model.swap(torch.zeros(1, 3, 64, 32), torch.zeros(1, 3, 64, 32)).shape == (1, 3, 64, 32)


def test_adain_uses_the_appearance_code_and_the_structure() -> None:
    model = DGNet(tiny_config(init_gain=0.3))
    g = torch.Generator().manual_seed(0)
    s1, s2 = model.encode_structure(images(0)), model.encode_structure(images(3))
    a1, a2 = torch.randn(B, 8, generator=g), torch.randn(B, 8, generator=g)
    out = model.decode(a1, s1)
    assert (model.decode(a2, s1) - out).abs().mean() > 1e-2  # same structure, other clothes: another image
    assert (model.decode(a1, s2) - out).abs().mean() > 1e-2  # same clothes, other structure
    params = model.G_dec.adain_params(a1)
    assert params.shape == (B, 1, 2, 2, 32)  # (B, n_res, AdaIN layers per block, (gamma, beta), C)
    # at the default N(0, 0.02) init the code's effect is small but there: every AdaIN input moves the image
    model = DGNet(tiny_config())
    a = model.encode_appearance(images(1)).requires_grad_()
    model.G_dec(model.encode_structure(images(0)), a).sum().backward()
    assert (a.grad.abs() > 0).all()


def test_kaiming_init_starts_the_decoder_at_image_scale_and_modulated_by_the_appearance_code() -> None:
    # N(0, 0.02) through the structure encoder and decoder leaves a near-constant grey output at step 0 (what the
    # first CUHK01 run started from); the reference's Kaiming init starts at image scale, the code moving it
    x, other = images(0), images(3)
    out = {}
    for init in ("normal", "kaiming"):
        model = DGNet(tiny_config(g_init=init))
        s, a, a2 = model.encode_structure(x), model.encode_appearance(x), model.encode_appearance(other)
        y = model.decode(a, s)
        out[init] = (float(y.std()), float((model.decode(a2, s) - y).abs().mean()))
    assert out["normal"][0] < 0.05 < 0.2 < out["kaiming"][0]
    assert out["kaiming"][1] > 10 * out["normal"][1]
    # seeded like every other weight: same seed, same weights; the appearance encoder's untouched by g_init
    one, two = DGNet(tiny_config(g_init="kaiming")), DGNet(tiny_config(g_init="kaiming"))
    assert all(torch.equal(p, q) for p, q in zip(one.G_dec.parameters(), two.G_dec.parameters()))
    normal = DGNet(tiny_config())
    assert all(torch.equal(p, q) for p, q in zip(one.G_app.parameters(), normal.G_app.parameters()))


def test_d_init_kaiming_starts_the_discriminator_image_sensitive() -> None:
    # the reference's N(0, 0.02) discriminator (no normalisation) starts as a bias: its scores barely move with
    # the image, so it cannot tell a photograph from its grey copy; Kaiming starts it seeing the image
    x = images(0)
    grey = gray(x).expand_as(x)
    moved = {}
    for init in ("normal", "kaiming"):
        model = DGNet(tiny_config(d_init=init))
        with torch.no_grad():
            moved[init] = max(float((a - b).abs().mean()) for a, b in zip(model.D(x), model.D(grey)))
    assert moved["normal"] < 1e-3 < 0.05 < moved["kaiming"]
    one, two, normal = (DGNet(tiny_config(d_init=i)) for i in ("kaiming", "kaiming", "normal"))
    assert all(torch.equal(p, q) for p, q in zip(one.D.parameters(), two.D.parameters()))  # seeded
    # only the discriminator changes: the generator's weights are the same
    assert all(torch.equal(p, q) for p, q in zip(one.G_dec.parameters(), normal.G_dec.parameters()))


def test_appearance_encoder_feeds_the_backbone_imagenet_normalised_input() -> None:
    seen = []

    class Probe(nn.Module):
        out_dim = 3

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            seen.append(z)
            return z

    enc = AppearanceEncoder(Probe(), app_dim=4, num_classes=2)
    x = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    a, logits = enc(x)
    assert a.shape == (1, 4) and logits.shape == (1, 2)
    expected = (torch.tensor([0.0, 0.5, 1.0]) - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor(
        [0.229, 0.224, 0.225])
    assert torch.allclose(seen[0][0, :, 0, 0], expected)
    assert set(enc.state_dict()) == {"proj.weight", "proj.bias", "classifier.weight", "classifier.bias"}


def test_frozen_call_moves_no_weight_and_no_running_statistic() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    frozen_call(net, x, batchnorm_train=True).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert net.training and net[1].training


def test_training_steps_losses_warmup_and_learning_rate() -> None:
    rng_before = torch.get_rng_state()
    model = DGNet(tiny_config())
    start = {k: v.clone() for k, v in model.nets.state_dict().items()}
    logs = [model.training_step(*batch(i)) for i in range(7)]
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's global RNG is untouched
    assert model.step == 7
    assert set(logs[0]) == {"rec_x", "rec_xp", "rec_a", "rec_s", "cyc", "id_real", "id_pos", "id_fake", "G_adv",
                            "G", "D", "D_reg", "warmup"}
    assert all(math.isfinite(v) for log in logs for v in log.values())
    # warm-up: 0 until 0.2 x 10 steps, then linear to 1 over 0.2 x 10 steps
    assert [log["warmup"] for log in logs] == [0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0]
    assert [model.warmup_weight(s) for s in (0, 2, 3, 4, 100)] == [0.0, 0.0, 0.5, 1.0, 1.0]
    for name in ("rec_a", "rec_s", "cyc"):
        assert logs[0][name] == 0.0 and logs[5][name] > 0
    for log in logs:  # G is the sum of its terms
        terms = ("rec_x", "rec_xp", "rec_a", "rec_s", "cyc", "id_real", "id_pos", "id_fake", "G_adv")
        assert log["G"] == pytest.approx(sum(log[k] for k in terms), rel=1e-5)
        assert log["id_real"] > 0 and log["id_fake"] > 0 and log["D_reg"] >= 0
    # every net learned something
    after = model.nets.state_dict()
    for net in ("G_app", "G_struct", "G_dec", "D"):
        keys = [k for k in start if k.startswith(net + ".") and start[k].is_floating_point()]
        assert any(not torch.equal(start[k], after[k]) for k in keys), net
    # the learning rates dropped by lr_gamma at 0.5 x 10 steps
    cfg = model.config
    assert model.lr_factor(4) == 1.0 and model.lr_factor(5) == pytest.approx(0.1)
    assert model.optimizer_G.param_groups[0]["lr"] == pytest.approx(cfg.lr_g * 0.1)
    assert model.optimizer_D.param_groups[0]["lr"] == pytest.approx(cfg.lr_d * 0.1)
    assert [g["lr"] for g in model.optimizer_app.param_groups] == pytest.approx([cfg.lr_app * 0.1, cfg.lr_app])


def test_resume_is_bit_identical(resume_matches) -> None:
    losses: dict[int, list[dict[str, float]]] = {}

    def run(model: DGNet, steps: range) -> None:
        for i in steps:
            losses.setdefault(id(model), []).append(model.training_step(*batch(i)))

    # warm-up and the encoder-again coin are both exercised within 6 steps; resume at 3
    straight, resumed, saved = resume_matches(lambda: DGNet(tiny_config()), run, 6, 3)
    assert losses[id(straight)][3:] == losses[id(resumed)]
    assert resumed.step == straight.step == 6
    assert torch.equal(resumed.rng.get_state(), straight.rng.get_state())
    # the same through an explicit BytesIO round trip and load_state_dict into a fresh model
    buf = io.BytesIO()
    torch.save(saved, buf)
    buf.seek(0)
    fresh = DGNet(tiny_config())
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    run(fresh, range(3, 6))
    assert losses[id(fresh)] == losses[id(straight)][3:]
    for (k, p), q in zip(straight.nets.state_dict().items(), fresh.nets.state_dict().values(), strict=True):
        assert torch.equal(p, q), k


def test_resume_with_a_backbone_that_draws_random_numbers(resume_matches) -> None:
    # EfficientNet-Lite0's drop-connect draws from the global RNG in training mode: seeded per step from the
    # model's saved generator, so a resumed run draws the same masks.
    def make() -> DGNet:
        return DGNet(tiny_config(app_backbone="efficientnet_lite0"))

    def run(model: DGNet, steps: range) -> None:
        for i in steps:
            x, x_pos, x_other, y, y_other = batch(i)
            model.training_step(x[:2], x_pos[:2], x_other[:2], y[:2], y_other[:2])

    resume_matches(make, run, 2, 1)


def test_generator_weights_hold_the_encoders_and_decoder_not_d() -> None:
    model = DGNet(tiny_config())
    weights = model.generator_weights()
    prefixes = {k.split(".")[0] for k in weights}
    assert prefixes == {"G_app", "G_struct", "G_dec"}
    assert "G_app.classifier.weight" in weights  # the identity classifier travels with E_a
    restored = DGNet(tiny_config(seed=1))
    assert not torch.equal(restored.G_dec.up[-2].weight, model.G_dec.up[-2].weight)
    restored.nets.load_state_dict({**restored.nets.state_dict(), **weights})
    x = images(0)
    assert torch.equal(restored.swap(x, x.flip(0)), model.swap(x, x.flip(0)))


@pytest.mark.parametrize(("overrides", "match"), [
    (dict(num_classes=1), "num_classes must be >= 2.*Fix: set num_classes"),
    (dict(image_height=30), "multiples of 4.*Fix"),
    (dict(app_backbone="efficientnet_lite"), "unknown backbone.*efficientnet_lite0.*Fix"),
    (dict(d_scales=3, d_layers=2), "too small for the discriminator.*Fix"),
    (dict(warmup_start=1.5), "warmup_start must be in \\[0, 1\\].*Fix"),
    (dict(app_dim=0), "app_dim must be >= 1"),
    (dict(g_init="xavier"), "g_init must be one of normal, kaiming.*Fix"),
    (dict(d_init="orthogonal"), "d_init must be one of normal, kaiming.*Fix"),
])
def test_bad_configs_say_what_and_how_to_fix(overrides: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        tiny_config(**overrides)


def test_the_default_config_needs_the_number_of_identities() -> None:
    with pytest.raises(ConfigError, match="num_classes"):
        DGNet()
    assert DGNetConfig(num_classes=751).size == (128, 64)  # the other defaults are valid


def test_bad_inputs_are_refused_with_a_fix() -> None:
    model = DGNet(tiny_config())
    x, x_pos, x_other, y, y_other = batch(0)
    with pytest.raises(DataError, match="identity indices in \\[0, 5\\).*Fix"):
        model.training_step(x, x_pos, x_other, y + 5, y_other)
    with pytest.raises(DataError, match="32 x 16"):
        model.training_step(torch.zeros(B, 3, 64, 32), x_pos, x_other, y, y_other)
    with pytest.raises(DataError, match="same number"):
        model.training_step(x, x_pos[:2], x_other, y, y_other)
    with pytest.raises(DataError, match="one structure image per appearance image"):
        model.swap(x, x[:2])
    with pytest.raises(DataError, match="Fix: pass encode_appearance"):
        model.decode(torch.zeros(B, 3), model.encode_structure(x))
    assert model.step == 0  # nothing trained
    assert gray(x).shape == (B, 1, H, W)
