"""Pixel-space reconstruction losses (L1 / L2), reduced to a scalar mean."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["reconstruction_loss", "RECON_LOSSES"]

RECON_LOSSES = ("l1", "l2", "mse")


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Mean reconstruction error over every element.

    Args:
        recon: reconstruction, any shape.
        target: target of the same shape.
        kind: ``"l1"`` (mean absolute error) or ``"l2"``/``"mse"`` (mean squared error). Default ``"l1"``.

    Example:
        >>> reconstruction_loss(torch.zeros(2, 3), torch.ones(2, 3), "l2")
        tensor(1.)
    """
    if recon.shape != target.shape:
        raise ValueError(f"reconstruction shape {list(recon.shape)} != target shape {list(target.shape)}")
    if kind == "l1":
        return F.l1_loss(recon, target)
    if kind in ("l2", "mse"):
        return F.mse_loss(recon, target)
    raise ValueError(f"recon_loss must be one of {RECON_LOSSES}, got {kind!r}")
