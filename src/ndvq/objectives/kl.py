"""KL divergence of a diagonal Gaussian posterior from the standard normal prior."""

from __future__ import annotations

import torch

__all__ = ["kl_divergence"]


def kl_divergence(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``KL(N(mean, std**2) || N(0, I))`` summed over every non-batch dim, averaged over the batch.

    ``0.5 * sum(mean**2 + std**2 - log(std**2) - 1)`` over ``dims=tuple(range(1, mean.ndim))``, so
    the same code is right for 1D, 2D and 3D latents ``[B, C, *S]``. Computed in float32.

    Args:
        mean: posterior mean ``[B, ...]``.
        std: posterior standard deviation, same shape, positive.

    Raises:
        ValueError: the two shapes differ.

    Example:
        >>> kl_divergence(torch.zeros(2, 4, 8), torch.ones(2, 4, 8))
        tensor(0.)
    """
    if mean.shape != std.shape:
        raise ValueError(f"mean shape {list(mean.shape)} != std shape {list(std.shape)}")
    var = std.float().pow(2)
    kl = 0.5 * (mean.float().pow(2) + var - torch.log(var) - 1.0)
    return kl.sum(dim=tuple(range(1, kl.ndim))).mean()
