"""Codes of a model output or an ``encode`` call as plain per-grid tensors (shared by the loop and infer).

A model with a quantizer gives integer codes, one tensor per code grid (a hierarchical model: top, then
bottom); a Gaussian bottleneck gives its posterior mean. Whether a model has codes is the model's fact:
``bool(model.codebook_sizes)``.

Example:
    >>> import torch
    >>> from ndvq import VQVAE
    >>> m = VQVAE(n_dims=1, in_channels=1, n_hiddens=8, downsample=[4], embedding_dim=4, n_codes=16).eval()
    >>> [g.shape for g in encode_grids(m, torch.randn(2, 1, 32))]
    [torch.Size([2, 8])]
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["code_counts", "grids_of", "encode_grids", "decode_grids"]


def code_counts(out) -> torch.Tensor | None:
    """The ``[G, K]`` per-code counts of a model output, or None for a model without codes.

    Grids of a hierarchical model are stacked when they have the same K; otherwise the bottom grid's.
    """
    counts = getattr(out, "counts", None)
    if counts is None:
        return None
    if isinstance(counts, (list, tuple)):
        counts = [c.reshape(-1, c.shape[-1]) for c in counts]
        if len({c.shape[-1] for c in counts}) != 1:
            return counts[-1].float()
        counts = torch.cat(counts)
    return counts.reshape(-1, counts.shape[-1]).float()


def grids_of(model: nn.Module, codes) -> list[torch.Tensor]:
    """What ``model.encode`` returns (or a forward output's ``indices`` / the output itself for a Gaussian)
    as plain per-grid tensors: integer codes ``[B, *L(, G)]`` per grid, or ``[posterior mean [B, E, *L]]``."""
    if not model.codebook_sizes:
        return [codes.mean.float()]
    if isinstance(codes, torch.Tensor):
        return [codes.long()]
    return [c.long() for c in codes]


@torch.no_grad()
def encode_grids(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """``x [B, C, *S]`` -> integer codes ``[B, *L(, G)]`` per code grid, or ``[posterior mean [B, E, *L]]``."""
    return grids_of(model, model.encode(x))


@torch.no_grad()
def decode_grids(model: nn.Module, grids: list[torch.Tensor]) -> torch.Tensor:
    """Inverse of :func:`encode_grids`: per-grid codes (or the latent mean) -> reconstruction ``[B, C, *S]``."""
    return model.decode(grids[0] if len(grids) == 1 else list(grids))
