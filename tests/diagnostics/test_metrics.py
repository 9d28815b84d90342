"""PSNR / SSIM (2D, 3D) / MSE / MAE / entropy metrics of the leaf module ndvq.metrics (used by `ndvq eval` and validation)."""

from __future__ import annotations

import math

import pytest
import torch

from ndvq.metrics import entropy_bits, mae, mse, psnr, ssim


def test_psnr_mse_mae_values():
    x = torch.zeros(2, 1, 8, 8)
    y = x + 0.1
    assert mse(x, y).tolist() == pytest.approx([0.01, 0.01])
    assert mae(x, y).tolist() == pytest.approx([0.1, 0.1])
    assert psnr(x, y, 2.0).tolist() == pytest.approx([10 * math.log10(4 / 0.01)] * 2, rel=1e-5)
    with pytest.raises(ValueError, match="same shape"):
        mse(x, y[:, :, :4])


@pytest.mark.parametrize("shape", [(2, 1, 16, 16), (2, 2, 8, 12, 12)])
def test_ssim_2d_3d(shape):
    x = torch.rand(shape) * 2 - 1
    s_same = ssim(x, x.clone(), 2.0)
    s_noisy = ssim(x, x + 0.5 * torch.randn(shape), 2.0)
    assert s_same.shape == (2,) and torch.allclose(s_same, torch.ones(2), atol=1e-4)
    assert (s_noisy < 0.9).all()


def test_ssim_1d_is_none_and_bits():
    assert ssim(torch.zeros(1, 1, 32), torch.zeros(1, 1, 32)) is None
    assert entropy_bits(torch.tensor([5.0, 5.0, 5.0, 5.0])) == pytest.approx(2.0)
    assert entropy_bits(torch.tensor([[10.0, 0.0], [1.0, 1.0]])) == pytest.approx(0.5)
