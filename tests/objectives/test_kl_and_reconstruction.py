"""KL divergence (reduced over every latent dim, any n_dims) and the L1/L2 reconstruction losses."""

from __future__ import annotations

import math

import pytest
import torch

from ndvq.objectives import kl_divergence, reconstruction_loss


@pytest.mark.parametrize("n_dims", [1, 2, 3])
def test_kl_matches_hand_computation(n_dims):
    shape = (3, 2, *(3,) * n_dims)
    mean, std = torch.randn(shape), torch.rand(shape) + 0.2
    per_sample = []
    for b in range(shape[0]):  # element by element, in plain Python
        total = 0.0
        for m, s in zip(mean[b].flatten().tolist(), std[b].flatten().tolist()):
            total += 0.5 * (m * m + s * s - math.log(s * s) - 1)
        per_sample.append(total)
    assert kl_divergence(mean, std).item() == pytest.approx(sum(per_sample) / len(per_sample), rel=1e-5)


def test_kl_is_layout_independent():
    mean, std = torch.randn(2, 4, 64), torch.rand(2, 4, 64) + 0.5
    a = kl_divergence(mean, std)
    b = kl_divergence(mean.reshape(2, 4, 4, 4, 4), std.reshape(2, 4, 4, 4, 4))
    torch.testing.assert_close(a, b)
    assert kl_divergence(torch.zeros(2, 3, 4), torch.ones(2, 3, 4)).item() == 0
    with pytest.raises(ValueError, match="std shape"):
        kl_divergence(mean, std[:, :2])


def test_reconstruction_losses():
    a, b = torch.zeros(2, 3), torch.full((2, 3), 2.0)
    assert reconstruction_loss(a, b, "l1").item() == 2.0
    assert reconstruction_loss(a, b, "l2").item() == 4.0
    assert reconstruction_loss(a, b, "mse").item() == 4.0
    with pytest.raises(ValueError, match="recon_loss"):
        reconstruction_loss(a, b, "huber")
    with pytest.raises(ValueError, match="shape"):
        reconstruction_loss(a, b[:, :2])


@pytest.mark.parametrize("kind", ["mse", "l1"])
def test_reconstruction_loss_half_precision_is_computed_in_float32(kind):
    a, b = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    half = reconstruction_loss(a.bfloat16(), b, kind)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, reconstruction_loss(a.bfloat16().float(), b, kind), rtol=0, atol=0)
    assert reconstruction_loss(a.double(), b.double(), kind).dtype == torch.float64
