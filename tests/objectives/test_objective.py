"""Objective: the weighted total, its scalars, the adversarial warm-up, for 1D/2D/3D model outputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ndvq.errors import ConfigError
from ndvq.objectives import Objective, ObjectiveOutput, generator_adversarial_loss

SIZES = {1: (48,), 2: (32, 32), 3: (16, 16, 16)}


def _x(n_dims: int, channels: int = 1) -> torch.Tensor:
    return torch.rand(2, channels, *SIZES[n_dims]) * 2 - 1


def _expected(obj: Objective, x, out, epoch: int) -> torch.Tensor:
    """Today's formula written out in today's order: the model's loss, then the extra terms."""
    rec = F.l1_loss(out.reconstruction, x) if obj.recon_loss == "l1" else F.mse_loss(out.reconstruction, x)
    model_loss = obj.recon_weight * rec + out.aux_loss
    if out.kl_loss is not None:
        model_loss = model_loss + obj.kl_weight * out.kl_loss
    if obj.perceptual is None and obj.discriminator is None:
        return model_loss
    extra = torch.zeros(())
    if obj.perceptual is not None:
        extra = extra + obj.perceptual_weight * obj.perceptual(out.reconstruction, x)
    if obj.adversarial_active(epoch):
        fake = obj.discriminator(out.reconstruction)
        extra = extra + obj.adversarial_weight * generator_adversarial_loss(fake, obj.adversarial_loss)
    return model_loss + extra


@pytest.mark.parametrize("n_dims", [1, 2, 3])
@pytest.mark.parametrize("kind", ["quantizer", "gaussian"])
@pytest.mark.parametrize("recon_loss", ["mse", "l1"])
def test_total_equals_hand_computed_sum(n_dims, kind, recon_loss, fake_outputs, tiny_vgg):
    perceptual = {"perceptual_weight": 0.7, "perceptual_weights": tiny_vgg, "perceptual_slices": 2}
    obj = Objective(n_dims, in_channels=1, recon_loss=recon_loss, recon_weight=1.5, kl_weight=1e-3,
                    adversarial_weight=0.3, disc_channels=4, disc_layers=1,
                    **(perceptual if n_dims > 1 else {}))
    x = _x(n_dims)
    out = fake_outputs[kind](x)
    res = obj(x, out, epoch=0)
    assert isinstance(res, ObjectiveOutput)
    expected = _expected(obj, x, out, epoch=0)
    torch.testing.assert_close(res.loss, expected, rtol=0, atol=0)  # the same value, bit for bit
    assert res.scalars["loss"].item() == res.loss.item()
    res.loss.backward()
    assert out.reconstruction.grad.abs().sum() > 0
    leaf = out.model_scalars["commitment_loss" if kind == "quantizer" else "kl_loss"]
    assert leaf.requires_grad  # the bottleneck term is part of the graph
    if kind == "quantizer":
        assert leaf.grad.item() == pytest.approx(0.25)  # aux_loss = 0.25 * commitment, weight 1


@pytest.mark.parametrize("n_dims", [1, 2, 3])
def test_model_side_terms_only(n_dims, fake_outputs):
    x = _x(n_dims, channels=2)
    q, g = fake_outputs["quantizer"](x), fake_outputs["gaussian"](x)
    obj = Objective(n_dims, 2, recon_weight=2.0, kl_weight=0.5)
    assert obj.perceptual is None and obj.discriminator is None
    rec_q, rec_g = F.mse_loss(q.reconstruction, x), F.mse_loss(g.reconstruction, x)
    assert obj(x, q).loss.item() == (2.0 * rec_q + q.aux_loss).item()
    assert obj(x, g).loss.item() == (2.0 * rec_g + 0.5 * g.kl_loss).item()


def test_changing_kl_weight_changes_only_the_total(fake_outputs):
    x = _x(2)
    out = fake_outputs["gaussian"](x)
    a, b = Objective(2, 1, kl_weight=1e-6)(x, out), Objective(2, 1, kl_weight=1e-2)(x, out)
    assert a.scalars.keys() == b.scalars.keys()
    for name in a.scalars:
        if name != "loss":
            assert torch.equal(a.scalars[name], b.scalars[name]), name
    assert b.loss.item() - a.loss.item() == pytest.approx((1e-2 - 1e-6) * out.kl_loss.item(), rel=1e-4)
    assert b.scalars["loss"].item() == b.loss.item() != a.loss.item()
    q = fake_outputs["quantizer"](x)  # no KL term: the KL weight does nothing
    assert Objective(2, 1, kl_weight=1e-6)(x, q).loss.item() == Objective(2, 1, kl_weight=1.0)(x, q).loss.item()


def test_scalar_names(fake_outputs, tiny_vgg):
    x = _x(2)
    q, g = fake_outputs["quantizer"](x), fake_outputs["gaussian"](x)
    plain = Objective(2, 1)
    assert sorted(plain(x, q).scalars) == ["commitment_loss", "loss", "perplexity", "recon_loss", "usage"]
    assert sorted(plain(x, g).scalars) == ["kl_loss", "latent_std", "loss", "recon_loss"]
    perceptual = Objective(2, 1, perceptual_weight=1.0, perceptual_weights=tiny_vgg)
    assert sorted(perceptual(x, g).scalars) == ["kl_loss", "latent_std", "loss", "perceptual_loss", "recon_loss"]
    adversarial = Objective(2, 1, adversarial_weight=0.1, disc_channels=4, disc_layers=1)
    assert "gen_loss" in adversarial(x, q).scalars and "perceptual_loss" not in adversarial(x, q).scalars
    both = Objective(2, 1, perceptual_weight=1.0, perceptual_weights=tiny_vgg, adversarial_weight=0.1,
                     disc_channels=4, disc_layers=1)
    scalars = both(x, q).scalars
    assert {"perceptual_loss", "gen_loss", "loss", "recon_loss", "commitment_loss"} <= set(scalars)
    assert all(not v.requires_grad and v.ndim == 0 for v in scalars.values())


def test_extras_false_leaves_out_perceptual_and_adversarial(fake_outputs, tiny_vgg):
    x = _x(2)
    out = fake_outputs["quantizer"](x)
    both = Objective(2, 1, perceptual_weight=1.0, perceptual_weights=tiny_vgg, adversarial_weight=0.1,
                     disc_channels=4, disc_layers=1)
    model_side = both(x, out, epoch=0, extras=False)
    assert model_side.loss.item() == Objective(2, 1)(x, out).loss.item()
    assert "perceptual_loss" not in model_side.scalars and "gen_loss" not in model_side.scalars
    assert both(x, out, epoch=0).loss.item() > model_side.loss.item()


@pytest.mark.parametrize("n_dims", [1, 2, 3])
def test_warmup(n_dims, fake_outputs):
    x = _x(n_dims)
    out = fake_outputs["quantizer"](x)
    obj = Objective(n_dims, 1, adversarial_weight=0.5, adversarial_warmup_epochs=2, disc_channels=4,
                    disc_layers=1)
    calls = []
    obj.discriminator.register_forward_hook(lambda *a: calls.append(1))
    without = Objective(n_dims, 1)(x, out).loss
    for epoch in (0, 1):
        res = obj(x, out, epoch)
        assert not obj.adversarial_active(epoch)
        assert res.loss.item() == without.item() and res.scalars["gen_loss"].item() == 0
        d_loss, d_scalars = obj.discriminator_loss(x, out.reconstruction, epoch)
        assert d_loss.item() == 0 and not d_loss.requires_grad and list(d_scalars) == ["disc_loss"]
    assert calls == []
    res = obj(x, out, epoch=2)
    assert obj.adversarial_active(2) and calls == [1]
    gen = res.scalars["gen_loss"].item()
    assert gen > 0 and res.loss.item() == pytest.approx(without.item() + 0.5 * gen, rel=1e-5)
    d_loss, d_scalars = obj.discriminator_loss(x, out.reconstruction, epoch=2)
    assert d_loss.requires_grad and d_scalars["disc_loss"].item() == d_loss.item() > 0


@pytest.mark.parametrize("n_dims", [1, 2, 3])
def test_discriminator_only_with_adversarial_weight(n_dims):
    assert Objective(n_dims, 3).discriminator is None
    assert not Objective(n_dims, 3).adversarial_active(10)
    obj = Objective(n_dims, 3, adversarial_weight=0.1, disc_channels=4, disc_layers=2)
    assert obj.discriminator is not None and obj.adversarial_active(0)
    assert obj.discriminator.n_dims == n_dims and obj.discriminator.in_channels == 3
    assert obj.discriminator(torch.randn(1, 3, *(12,) * n_dims)).shape == (1, 1, *(1,) * n_dims)


@pytest.mark.parametrize("kwargs,match", [
    ({"recon_loss": "huber"}, "recon_loss must be one of"),
    ({"recon_weight": 0.0}, "recon_weight must be > 0"),
    ({"kl_weight": -1.0}, "kl_weight=-1.0"),
    ({"adversarial_weight": -0.1}, "adversarial_weight=-0.1"),
    ({"adversarial_loss": "wgan"}, "adversarial_loss must be one of"),
    ({"adversarial_warmup_epochs": -1}, "adversarial_warmup_epochs must be >= 0"),
    ({"in_channels": 0}, "in_channels must be >= 1"),
    ({"adversarial_weight": 0.1, "disc_layers": 0}, "disc_layers must be >= 1"),
])
def test_bad_arguments_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Objective(**{"n_dims": 2, "in_channels": 1, **kwargs})
    with pytest.raises(ValueError, match="n_dims must be 1, 2 or 3"):
        Objective(n_dims=4, in_channels=1)
