"""VQGAN/LDM adversarial training: BCE criterion, start step, adaptive generator weight, every backbone x bottleneck."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ndvq.errors import ConfigError
from ndvq.objectives import Objective, discriminator_adversarial_loss, generator_adversarial_loss
from ndvq.objectives.adversarial import adaptive_generator_weight


def test_bce_criteria_are_binary_cross_entropy():
    real, fake = torch.randn(2, 1, 5, 5), torch.randn(2, 1, 5, 5)
    torch.testing.assert_close(generator_adversarial_loss(fake, "bce"),
                               F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake)))
    want = 0.5 * (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                  + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
    torch.testing.assert_close(discriminator_adversarial_loss(real, fake, "bce"), want)


def test_adaptive_weight_is_the_gradient_norm_ratio_clamped():
    w = torch.randn(4, 3, requires_grad=True)
    x = torch.randn(3)
    rec, gen = (w @ x).pow(2).sum(), (w.sum() * 0.01)
    g_rec = torch.autograd.grad(rec, w, retain_graph=True)[0]
    g_gen = torch.autograd.grad(gen, w, retain_graph=True)[0]
    want = g_rec.norm() / (g_gen.norm() + 1e-4)
    got = adaptive_generator_weight(rec, gen, w)
    torch.testing.assert_close(got, want)
    assert not got.requires_grad
    assert adaptive_generator_weight(rec, gen, w, max_weight=0.5).item() == 0.5


def test_start_step_and_epoch_both_gate_the_discriminator():
    obj = Objective(n_dims=2, in_channels=1, adversarial_weight=0.1, adversarial_start_step=5,
                    adversarial_warmup_epochs=1, disc_channels=4, disc_layers=1)
    assert not obj.adversarial_active(0, 10) and not obj.adversarial_active(2, 4)
    assert obj.adversarial_active(1, 5) and obj.adversarial_active(1)
    x = torch.randn(2, 1, 16, 16)
    loss, _ = obj.discriminator_loss(x, x, epoch=3, step=1)
    assert loss.item() == 0 and not loss.requires_grad
    with pytest.raises(ConfigError, match="adversarial_start_step"):
        Objective(n_dims=2, in_channels=1, adversarial_start_step=-1)
    with pytest.raises(ConfigError, match="adversarial_loss"):
        Objective(n_dims=2, in_channels=1, adversarial_loss="wgan")


PAIRS = [("videogpt", "vq"), ("videogpt", "gaussian"), ("ldm", "gaussian"), ("ldm", "fsq")]


@pytest.mark.parametrize("backbone,bottleneck", PAIRS)
@pytest.mark.parametrize("kind", ["hinge", "lsgan", "bce"])
def test_adaptive_weight_with_every_backbone_and_bottleneck(backbone, bottleneck, kind):
    from ndvq.models import Autoencoder

    torch.manual_seed(0)
    model = Autoencoder(n_dims=2, in_channels=1, backbone=backbone, bottleneck=bottleneck, embedding_dim=4,
                        n_codes=16, videogpt={"n_hiddens": 8, "num_res_blocks": 1, "downsample": 2, "n_head": 1},
                        ldm={"channels": [4, 8], "num_res_blocks": 1, "norm_num_groups": 4},
                        quantizer={"fsq_levels": [5, 3]} if bottleneck == "fsq" else None)
    obj = Objective(n_dims=2, in_channels=1, adversarial_weight=0.5, adversarial_loss=kind,
                    adversarial_adaptive_weight=True, disc_channels=4, disc_layers=1)
    x = torch.randn(2, 1, 16, 16)
    out = model(x)
    last = model.backbone.last_layer
    res = obj(x, out, 0, step=0, last_layer=last)
    assert res.scalars["adaptive_weight"] > 0
    res.loss.backward()
    assert last.grad is not None and torch.isfinite(last.grad).all()
    with pytest.raises(ValueError, match="last_layer"):
        obj(x, model(x), 0)
    with torch.no_grad():  # validation: no gradients, no adaptive weight needed
        assert torch.isfinite(obj(x, model(x), 0).loss)
