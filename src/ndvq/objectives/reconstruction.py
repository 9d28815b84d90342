"""Pixel-space reconstruction losses (L1 / L2), reduced to a scalar mean."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ndvq.errors import ConfigError

__all__ = ["reconstruction_loss", "RECON_LOSSES"]

RECON_LOSSES = ("mse", "l2", "l1")


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor,
                        kind: str = "mse", mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean reconstruction error over every real element, computed in at least float32.

    Half-precision inputs (e.g. a bf16 reconstruction from a mixed-precision forward) are upcast
    to float32 first, which is what autocast does for these losses; float32/float64 inputs are
    used as they are.

    Args:
        recon: reconstruction, any shape.
        target: target of the same shape.
        kind: ``"mse"``/``"l2"`` (mean squared error) or ``"l1"`` (mean absolute error).
            Default ``"mse"``.
        mask: bool, broadcastable to ``target`` (e.g. ``[B, 1, *S]`` from
            ``ndvq.data.common.valid_mask``): only True elements count (padding excluded); the
            mean is over the real elements of the whole batch. Default None: every element.

    Raises:
        ConfigError: ``kind`` is not one of :data:`RECON_LOSSES`.
        ValueError: the two shapes differ.

    Example:
        >>> reconstruction_loss(torch.zeros(2, 3), torch.ones(2, 3), "l2")
        tensor(1.)
    """
    if kind not in RECON_LOSSES:
        raise ConfigError(f"recon_loss must be one of {RECON_LOSSES}, got {kind!r}")
    if recon.shape != target.shape:
        raise ValueError(
            f"reconstruction shape {list(recon.shape)} != target shape {list(target.shape)}"
        )
    dtype = torch.promote_types(torch.promote_types(recon.dtype, target.dtype), torch.float32)
    recon, target = recon.to(dtype), target.to(dtype)
    if mask is not None:
        err = (recon - target).abs() if kind == "l1" else (recon - target).pow(2)
        m = mask.to(dtype).expand_as(err)
        return (err * m).sum() / m.sum().clamp_min(1)
    if kind == "l1":
        return F.l1_loss(recon, target)
    return F.mse_loss(recon, target)
