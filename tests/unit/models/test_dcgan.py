"""DCGAN (LSRO's unconditional generator): shapes, the noise as provenance, resume, clear errors."""
from __future__ import annotations

import pytest
import torch

from reidaug.errors import ConfigError
from reidaug.models.dcgan import DCGAN, DCGANConfig, noise_for

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**kw) -> DCGANConfig:
    return DCGANConfig(**{"image_height": 32, "image_width": 16, "nz": 8, "ngf": 4, "ndf": 4, **kw})


def test_shapes_at_lsro_size_and_small():
    full = DCGAN(DCGANConfig())  # 128 x 64: 4x2 map, then 5 stride-2 layers each way
    assert full.config.layers == 5
    strides = [m.stride for m in full.G.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert strides == [(1, 1)] + [(2, 2)] * 5
    z = noise_for(0, [0, 1], 100)
    out = full.generate(z)
    assert out.shape == (2, 3, 128, 64)
    assert full.D(out).shape == (2,)
    small = DCGAN(tiny())
    assert small.generate(noise_for(0, [0], 8)).shape == (1, 3, 32, 16)


def test_noise_is_a_pure_function_of_seed_and_index():
    a = noise_for(3, [5, 6, 7], 16)
    b = noise_for(3, [7], 16)
    assert torch.equal(a[2], b[0]) and not torch.equal(a[0], a[1])
    assert not torch.equal(noise_for(4, [5], 16)[0], a[0])


def test_a_training_step_moves_both_nets_and_reports_losses():
    m = DCGAN(tiny())
    g0 = [p.clone() for p in m.G.parameters()]
    d0 = [p.clone() for p in m.D.parameters()]
    losses = m.training_step(torch.rand(4, 3, 32, 16) * 2 - 1)
    assert set(losses) == {"G", "D_real", "D_fake", "D"} and m.step == 1
    assert losses["D"] == pytest.approx(0.5 * (losses["D_real"] + losses["D_fake"]))
    assert any(not torch.equal(a, b) for a, b in zip(g0, m.G.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d0, m.D.parameters()))


def test_resume_is_bit_identical(resume_matches):
    batches = [torch.rand(3, 3, 32, 16, generator=torch.Generator().manual_seed(i)) * 2 - 1 for i in range(4)]

    def run(model: DCGAN, steps: range) -> None:
        for i in steps:
            model.training_step(batches[i])

    straight, resumed, _ = resume_matches(lambda: DCGAN(tiny()), run, 4, 2)
    assert torch.equal(straight.noise.get_state(), resumed.noise.get_state())


@pytest.mark.parametrize("h, w", [(128, 32), (96, 48), (4, 2)])
def test_sizes_that_do_not_double_from_4x2_are_refused(h, w):
    with pytest.raises(ConfigError, match="128 x 64"):
        DCGANConfig(image_height=h, image_width=w)
