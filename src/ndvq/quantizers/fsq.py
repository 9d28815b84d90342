"""Finite scalar quantization (FSQ, Mentzer et al. 2023): no codebook to collapse.

Each of ``d = len(levels)`` channels is bounded with ``tanh`` and rounded to one of ``levels[i]``
values; the implicit codebook is the grid of ``prod(levels)`` points, all of them reachable.
Tokens of another width are projected to ``d`` channels and back with linear layers.

Example:
    >>> import torch
    >>> fsq = FSQ(dim=16, levels=[8, 5, 5, 5])
    >>> out = fsq(torch.randn(2, 10, 16))
    >>> fsq.n_codes, out.indices.shape
    (1000, torch.Size([2, 10]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .base import Quantizer, QuantizerOutput, all_reduce_, usage_from_counts

__all__ = ["FSQ", "round_ste"]


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round with a straight-through gradient."""
    return x + (x.round() - x).detach()


class FSQ(Quantizer):
    """Finite scalar quantizer.

    Args:
        dim: token dimension ``D``.
        levels: quantization levels per channel (each >= 2); the codebook size is their product.
            Default ``[8, 5, 5, 5]`` (1000 codes). Common choices: ``[8, 8, 8, 5, 5, 5]`` (64000),
            ``[8, 6, 5]`` (240).
        eps: margin that keeps ``tanh`` away from its asymptotes. Default 1e-3.

    ``loss`` and ``commitment_loss`` are zero: FSQ needs no auxiliary loss. ``codebook_parameters()``
    is empty; the projections (when ``dim != len(levels)``) are ordinary model parameters.
    """

    def __init__(self, dim: int, levels: Sequence[int] = (8, 5, 5, 5), eps: float = 1e-3) -> None:
        super().__init__()
        levels = [int(v) for v in levels]
        if not levels or min(levels) < 2:
            raise ValueError(f"levels must be a non-empty list of ints >= 2, got {levels}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim, self.n_codebooks, self.eps = dim, 1, eps
        self.levels_list = levels
        self.n_codes = math.prod(levels)
        self.code_dim = len(levels)
        basis = torch.cumprod(torch.tensor([1] + levels[:-1]), dim=0)
        self.register_buffer("levels", torch.tensor(levels), persistent=False)
        self.register_buffer("basis", basis, persistent=False)
        self.project_in = nn.Linear(dim, self.code_dim) if dim != self.code_dim else nn.Identity()
        self.project_out = nn.Linear(self.code_dim, dim) if dim != self.code_dim else nn.Identity()

    def codebook_parameters(self) -> list[nn.Parameter]:
        """FSQ has no learned codebook: empty list."""
        return []

    def _bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash each channel into ``(-half_l, half_l)`` (shifted by 0.5 for even levels)."""
        levels = self.levels.to(z.dtype)
        half_l = (levels - 1) * (1 + self.eps) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0).to(z.dtype)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def _half_width(self) -> torch.Tensor:
        return (self.levels // 2).float()

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Normalised grid codes ``[..., d]`` -> indices ``[...]``."""
        half = self._half_width()
        digits = (codes * half + half).round().long()  # [..., d] in 0..levels-1
        return (digits * self.basis).sum(dim=-1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices ``[...]`` -> normalised grid codes ``[..., d]`` in ``[-1, 1]``."""
        digits = torch.remainder(torch.div(indices.unsqueeze(-1), self.basis, rounding_mode="floor"), self.levels)
        half = self._half_width()
        return (digits.float() - half) / half

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices ``[...]`` -> quantized vectors ``[..., dim]``."""
        if indices.dtype not in (torch.long, torch.int32):
            raise TypeError(f"indices must be an integer tensor, got {indices.dtype}")
        return self.project_out(self.indices_to_codes(indices.long()))

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize tokens ``z [..., dim]``."""
        self.check_input(z)
        lead = z.shape[:-1]
        x = self.project_in(z).reshape(-1, self.code_dim).float()  # [..., D] -> [N, d]
        codes = round_ste(self._bound(x)) / self._half_width()  # [N, d] in [-1, 1]
        idx = self.codes_to_indices(codes.detach())
        quantized = self.project_out(codes.to(z.dtype)).reshape(*lead, self.dim)
        counts = x.new_zeros(self.n_codes).index_add_(0, idx, torch.ones_like(idx, dtype=x.dtype))
        counts = all_reduce_(counts, self.training)[None]  # [1, K]
        perplexity, usage = usage_from_counts(counts)
        zero = x.new_zeros(())
        return QuantizerOutput(quantized=quantized, indices=idx.reshape(lead), loss=zero, commitment_loss=zero,
                               perplexity=perplexity.detach(), usage=usage.detach(), counts=counts.detach(),
                               losses={})

    def extra_repr(self) -> str:
        return f"dim={self.dim}, levels={self.levels_list}, n_codes={self.n_codes}"
