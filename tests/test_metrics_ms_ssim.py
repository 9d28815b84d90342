"""MS-SSIM per item for 2D and 3D (torchmetrics), with fewer scales for small inputs."""

from __future__ import annotations

import pytest
import torch

from ndvq import metrics as M


@pytest.mark.parametrize("shape", [(2, 1, 192, 176), (2, 2, 40, 48), (2, 1, 24, 32, 40), (3, 1, 8, 8)])
def test_identical_is_one_and_noise_lowers_it(shape):
    torch.manual_seed(0)
    x = torch.rand(*shape)
    same = M.ms_ssim(x, x, 1.0)
    assert same.shape == (shape[0],) and torch.allclose(same, torch.ones(shape[0]), atol=1e-4)
    small, large = (M.ms_ssim(x, (x + s * torch.randn_like(x)).clamp(0, 1), 1.0) for s in (0.05, 0.3))
    assert (small < 1).all() and (large < small).all() and torch.isfinite(large).all()


def test_five_scales_equal_torchmetrics_default():
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as ms

    x = torch.rand(2, 1, 192, 192)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    torch.testing.assert_close(M.ms_ssim(x, y, 1.0), ms(y, x, data_range=1.0, reduction="none", normalize="relu"))


def test_1d_and_tiny_give_none():
    assert M.ms_ssim(torch.rand(2, 1, 64), torch.rand(2, 1, 64)) is None
    assert M.ms_ssim(torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)) is None


@pytest.mark.parametrize("size", [81, 98, 161, 175])
def test_sizes_between_torchmetrics_rules_give_a_number(size):
    """Sizes where the scale count by downsampling fits but torchmetrics' own size rule
    (``size // (scales - 1)**2 > kernel - 1``) does not: one scale fewer, never an exception."""
    x = torch.rand(1, 3, size, size) * 2 - 1
    assert torch.isfinite(M.ms_ssim(x, (x + 0.05 * torch.randn_like(x)).clamp(-1, 1), 2.0)).all()
