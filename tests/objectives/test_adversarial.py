"""Adversarial losses, the patch discriminator and the Objective's adversarial warm-up switch
(ported from tests/losses/test_adversarial_loss.py: ``AutoencoderLoss.generator_loss`` is now the
part of ``Objective(...)(x, out, epoch).loss`` beyond the reconstruction term)."""

from __future__ import annotations

import pytest
import torch

from ndvq.errors import ConfigError
from ndvq.objectives import (
    Objective,
    PatchDiscriminator,
    discriminator_adversarial_loss,
    generator_adversarial_loss,
)


@pytest.mark.parametrize("n_dims", [1, 2, 3])
def test_discriminator_shapes_and_instance_norm(n_dims):
    disc = PatchDiscriminator(n_dims, in_channels=2, channels=4, n_layers=2)
    x = torch.randn(3, 2, *(12,) * n_dims)
    out = disc(x)
    assert out.shape == (3, 1, *(1,) * n_dims)
    # instance norm: a sample's score does not depend on the rest of the batch
    torch.testing.assert_close(disc(x[:1]), out[:1], rtol=1e-5, atol=1e-6)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in disc.modules())
    with pytest.raises(ValueError, match=">= 12"):
        disc(torch.randn(1, 2, *(8,) * n_dims))
    with pytest.raises(ValueError, match=r"expects \[B, 2"):
        disc(torch.randn(1, 3, *(12,) * n_dims))


def test_discriminator_errors_are_config_errors():
    with pytest.raises(ConfigError, match="lower loss.disc_layers"):
        PatchDiscriminator(2, 1, channels=4, n_layers=2)(torch.randn(1, 1, 8, 8))
    with pytest.raises(ConfigError, match="disc_layers must be >= 1"):
        PatchDiscriminator(2, 1, n_layers=0)


def test_loss_formulas_by_hand():
    real, fake = torch.tensor([0.5, 2.0]), torch.tensor([-0.5, 0.25])
    assert generator_adversarial_loss(fake, "lsgan").item() == pytest.approx(((-1.5) ** 2 + 0.75 ** 2) / 2)
    assert generator_adversarial_loss(fake, "hinge").item() == pytest.approx(0.125)
    d_ls = 0.5 * (((0.5 - 1) ** 2 + (2.0 - 1) ** 2) / 2 + (0.25 + 0.0625) / 2)
    assert discriminator_adversarial_loss(real, fake, "lsgan").item() == pytest.approx(d_ls)
    d_hinge = 0.5 * ((0.5 + 0.0) / 2 + (0.5 + 1.25) / 2)
    assert discriminator_adversarial_loss(real, fake, "hinge").item() == pytest.approx(d_hinge)
    with pytest.raises(ValueError, match="adversarial_loss"):
        generator_adversarial_loss(fake, "wgan")
    with pytest.raises(ConfigError, match="adversarial_loss"):
        discriminator_adversarial_loss(real, fake, "wgan")


def test_no_discriminator_when_weight_zero(generator_terms):
    crit = Objective(adversarial_weight=0.0, n_dims=2, in_channels=1)
    assert crit.discriminator is None and not crit.adversarial_active(100)
    x = torch.randn(2, 1, 32, 32)
    loss, logs = generator_terms(crit, x, x.clone().requires_grad_(), epoch=5)
    assert loss.item() == 0 and "gen_loss" not in logs  # the term is off: not logged
    d_loss, d_logs = crit.discriminator_loss(x, x, epoch=5)
    assert d_loss.item() == 0 and not d_loss.requires_grad


@pytest.mark.parametrize("kind", ["lsgan", "hinge"])
def test_warmup_switch(kind, generator_terms):
    crit = Objective(adversarial_weight=0.5, adversarial_loss=kind, n_dims=2, in_channels=1,
                     disc_channels=4, disc_layers=2, adversarial_warmup_epochs=2)
    x = torch.randn(2, 1, 24, 24)
    calls = []
    crit.discriminator.register_forward_hook(lambda *a: calls.append(1))
    for epoch in (0, 1):  # warm-up: nothing adversarial happens
        recon = (x + 0.1).requires_grad_()
        loss, logs = generator_terms(crit, x, recon, epoch)
        d_loss, d_logs = crit.discriminator_loss(x, recon.detach(), epoch)
        assert not crit.adversarial_active(epoch)
        assert loss.item() == 0 and logs["gen_loss"].item() == 0
        assert d_loss.item() == 0 and not d_loss.requires_grad and d_logs["disc_loss"].item() == 0
    assert calls == []
    assert all(p.grad is None for p in crit.discriminator.parameters())

    recon = (x + 0.1).requires_grad_()
    loss, logs = generator_terms(crit, x, recon, epoch=2)
    assert crit.adversarial_active(2) and len(calls) == 1
    assert loss.item() == pytest.approx(0.5 * logs["gen_loss"].item()) and loss.item() != 0
    loss.backward()
    recon_only = 2 * (recon.detach() - x) / x.numel()  # d mse / d recon
    assert recon.grad.abs().sum() > 0 and not torch.allclose(recon.grad, recon_only)
    crit.discriminator.zero_grad(set_to_none=True)
    d_loss, d_logs = crit.discriminator_loss(x, recon.detach(), epoch=2)
    d_loss.backward()
    assert d_loss.requires_grad and d_logs["disc_loss"].item() > 0
    assert all(p.grad is not None for p in crit.discriminator.parameters())
    assert recon.grad is not None  # untouched by the discriminator step (recon was detached)


def test_combined_perceptual_and_adversarial(make_weights, generator_terms):
    crit = Objective(perceptual_weight=2.0, perceptual_weights=make_weights(), adversarial_weight=0.1,
                     n_dims=3, in_channels=1, disc_channels=4, disc_layers=1, perceptual_slices=2)
    x = torch.rand(1, 1, 16, 16, 16) * 2 - 1
    recon = (x * 0.5).requires_grad_()
    loss, logs = generator_terms(crit, x, recon, epoch=0)
    expected = 2.0 * logs["perceptual_loss"] + 0.1 * logs["gen_loss"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert logs["perceptual_loss"].item() > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="adversarial_loss"):
        Objective(n_dims=2, in_channels=1, adversarial_weight=1.0, adversarial_loss="wgan")
    with pytest.raises(ValueError, match=">= 0"):
        Objective(n_dims=2, in_channels=1, perceptual_weight=-1.0)
