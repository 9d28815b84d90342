"""Reconstruction and code-stream metrics: PSNR, SSIM and MS-SSIM (2D/3D), MSE, MAE, entropy in bits (a leaf module).

All per-item functions take ``x, y: [B, C, *S]`` and return a ``[B]`` tensor (no host sync), so
callers can sum them over a split. ``mask`` (optional, ``[B, 1 or C, *S]`` bool, True = real data,
e.g. ``ndvq.data.common.valid_mask(batch)``) restricts them to the real elements of padded items;
:func:`code_histogram` counts codes outside padding only.

Example:
    >>> import torch
    >>> x = torch.zeros(2, 1, 16, 16); y = x + 0.1
    >>> psnr(x, y, data_range=2.0).round(decimals=2).tolist()
    [26.02, 26.02]
"""

from __future__ import annotations

import math

import torch

__all__ = ["mse", "mae", "psnr", "ssim", "ms_ssim", "entropy_bits", "masked_mean", "code_histogram", "MS_SSIM_BETAS"]

#: the five scale weights of Wang et al. (2003), as torchmetrics and MONAI use them
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _dims(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(1, x.ndim))


def _check(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape:
        raise ValueError(f"inputs and reconstructions must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim < 3:
        raise ValueError(f"expected [B, C, *S] tensors, got shape {tuple(x.shape)}")


def masked_mean(v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-item mean of ``v [B, C, *S]`` over the elements where ``mask`` (broadcast to ``v``) is True;
    ``[B]``. ``mask=None``: every element. An item with no True element gives 0."""
    if mask is None:
        return v.mean(dim=_dims(v))
    m = mask.to(v.dtype).expand_as(v)
    return (v * m).sum(dim=_dims(v)) / m.sum(dim=_dims(v)).clamp_min(1)


def mse(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error per item, ``[B]`` (over the real elements when ``mask`` is given)."""
    _check(x, y)
    return masked_mean((x.float() - y.float()).pow(2), mask)


def mae(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error per item, ``[B]`` (over the real elements when ``mask`` is given)."""
    _check(x, y)
    return masked_mean((x.float() - y.float()).abs(), mask)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float | None = None,
         mask: torch.Tensor | None = None) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per item, ``[B]``.

    Args:
        x: reference ``[B, C, *S]``.
        y: reconstruction, same shape.
        data_range: peak-to-peak range of the data (2.0 for data in ``[-1, 1]``). Default None:
            each reference item's own ``max - min`` (over its real elements; z-scored series).
        mask: real elements (see the module docstring). Default None: all.
    """
    err = mse(x, y, mask).clamp_min(1e-12)
    if data_range is None:
        xf = x.float()
        m = torch.ones_like(xf, dtype=torch.bool) if mask is None else mask.expand_as(xf)
        hi = xf.masked_fill(~m, -torch.inf).flatten(1).max(dim=1).values
        lo = xf.masked_fill(~m, torch.inf).flatten(1).min(dim=1).values
        rng = (hi - lo).nan_to_num(0.0, 0.0, 0.0).clamp_min(1e-12)
    else:
        rng = torch.full_like(err, float(data_range))
    return 10 * torch.log10(rng**2 / err)


def code_histogram(codes: torch.Tensor, n_codes: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``[G, n_codes]`` counts of integer ``codes [B, *L]`` (G = 1) or ``[B, *L, G]``, counting only the
    positions where ``mask [B, *L]`` is True (code positions not wholly inside padding)."""
    g = codes.reshape(*codes.shape[: mask.ndim if mask is not None else codes.ndim], -1)  # [B, *L, G]
    if mask is not None:
        g = g[mask]  # [N, G]
    g = g.reshape(-1, g.shape[-1]).long()
    out = torch.zeros(g.shape[-1], int(n_codes), dtype=torch.float64, device=codes.device)
    return out.scatter_add_(1, g.T.contiguous(), torch.ones_like(g.T, dtype=torch.float64))


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float | None = None,
         mask: torch.Tensor | None = None) -> torch.Tensor | None:
    """Structural similarity per item, ``[B]``, for 2D ``[B, C, H, W]`` and 3D ``[B, C, D, H, W]`` data
    (torchmetrics' Gaussian-window SSIM; the window shrinks to fit small inputs). None for 1D data.

    Args:
        x: reference.
        y: reconstruction.
        data_range: as in :func:`psnr`; default None uses the reference batch's range.
        mask: real elements; each item is cropped to the bounding box of its mask (padding lies at
            the end of each axis) and scored on its own. Default None: all.
    """
    _check(x, y)
    if x.ndim not in (4, 5):
        return None
    if mask is not None:
        out = []
        for xi, yi, mi in zip(x, y, mask):
            box = tuple(slice(0, int(mi.any(dim=[d for d in range(mi.ndim) if d != a]).sum()) or 1)
                        for a in range(1, mi.ndim))
            v = ssim(xi[(slice(None), *box)][None], yi[(slice(None), *box)][None], data_range)
            out.append(v if v is not None else torch.full((1,), float("nan"), device=x.device))
        return torch.cat(out)
    from torchmetrics.functional.image import structural_similarity_index_measure

    spatial = x.shape[2:]
    kernel = [min(11, s if s % 2 else s - 1) for s in spatial]
    if min(kernel) < 3:
        return None
    sigma = [1.5 * k / 11 for k in kernel]
    if data_range is None:
        data_range = float(x.max() - x.min()) or 1.0
    return structural_similarity_index_measure(y.float(), x.float(), kernel_size=kernel, sigma=sigma,
                                               data_range=data_range, reduction="none")


def ms_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float | None = None) -> torch.Tensor | None:
    """Multi-scale SSIM per item, ``[B]``, for 2D and 3D data (torchmetrics; Gaussian window 11, sigma 1.5).

    Five scales need every spatial size > 160; smaller inputs use as many scales as fit (the first
    of :data:`MS_SSIM_BETAS`, renormalised to sum 1) and a smaller window. Negative contrast terms
    are clipped at 0 (torchmetrics' ``normalize="relu"``) so a poor reconstruction gives a small
    number, not NaN. None for 1D data or when fewer than two scales fit.

    Args:
        x: reference ``[B, C, H, W]`` or ``[B, C, D, H, W]``.
        y: reconstruction, same shape.
        data_range: as in :func:`psnr`; default None uses the reference batch's range.
    """
    _check(x, y)
    if x.ndim not in (4, 5):
        return None
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as ms

    size = min(x.shape[2:])
    kernel = (size - 1) // 2 + 1  # the largest window that leaves two scales: (kernel - 1) * 2 < size
    kernel = max(3, min(11, kernel if kernel % 2 else kernel - 1))  # odd
    scales = max((n for n in range(1, len(MS_SSIM_BETAS) + 1)  # torchmetrics also needs size // (n-1)^2 > kernel-1
                  if size > (kernel - 1) * 2 ** (n - 1) and size // max(1, n - 1) ** 2 > kernel - 1), default=0)
    if scales < 2:
        return None
    betas = MS_SSIM_BETAS[:scales]
    betas = tuple(b / sum(betas) for b in betas)
    if data_range is None:
        data_range = float(x.max() - x.min()) or 1.0
    return ms(y.float(), x.float(), kernel_size=kernel, sigma=1.5 * kernel / 11, data_range=data_range,
              betas=betas, normalize="relu", reduction="none")


def entropy_bits(counts: torch.Tensor) -> float:
    """Empirical entropy in bits per code of a ``[K]`` or ``[G, K]`` count table (mean over G): the rate an
    ideal entropy coder would reach on this split."""
    counts = counts.double().reshape(-1, counts.shape[-1])
    p = counts / counts.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    h = -(p * torch.log2(p.clamp_min(1e-300))).sum(dim=-1)
    return float(h.mean()) if math.isfinite(float(h.mean())) else float("nan")
