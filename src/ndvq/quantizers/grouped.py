"""Grouped (product) VQ: split each token into ``G`` groups, quantize each group with its own codebook.

With ``G`` groups of ``K`` codes the effective codebook has ``K**G`` entries while each search
stays ``K``-wide, so large effective vocabularies cost little and collapse less. Composition:
``GroupedVQ`` wraps ``G`` quantizers of width ``dim // G`` (by default
:class:`~ndvq.quantizers.vq.VectorQuantizer` with the given options).

Example:
    >>> import torch
    >>> gvq = GroupedVQ(dim=64, n_codes=256, groups=4)
    >>> out = gvq(torch.randn(2, 8, 64))
    >>> out.indices.shape, gvq.n_codebooks
    (torch.Size([2, 8, 4]), 4)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import Quantizer, QuantizerOutput, usage_from_counts
from .residual import MAX_STAGES
from .vq import VectorQuantizer

__all__ = ["GroupedVQ"]


class GroupedVQ(Quantizer):
    """Product quantizer over channel groups.

    Args:
        dim: token dimension ``D`` (divisible by ``groups``).
        n_codes: codes per group ``K``.
        groups: number of groups ``G``. Default 2.
        beta: commitment weight of each group. Default 0.25.
        ema_decay: EMA decay of each group. Default 0.99.
        quantizers: optional list of ``G`` already-built quantizers of width ``dim // G`` to wrap.
        **vq_options: :class:`VectorQuantizer` options for every group (``update``, ``init``, ...).

    ``indices`` are ``[..., G]``; ``loss`` is the mean of the groups' losses (so its scale does
    not grow with ``G``); ``commitment_loss`` likewise; ``counts`` is ``[G, K]``.
    """

    def __init__(self, dim: int, n_codes: int, groups: int = 2, beta: float = 0.25, ema_decay: float = 0.99,
                 quantizers: Sequence[Quantizer] | None = None, **vq_options) -> None:
        super().__init__()
        if not 1 <= groups <= MAX_STAGES or dim % groups:
            raise ValueError(f"dim ({dim}) must be divisible by groups ({groups}), with 1 <= groups <= {MAX_STAGES}")
        width = dim // groups
        if quantizers is None:
            quantizers = [VectorQuantizer(width, n_codes, beta=beta, ema_decay=ema_decay, **vq_options)
                          for _ in range(groups)]
        quantizers = list(quantizers)
        if len(quantizers) != groups:
            raise ValueError(f"expected {groups} quantizers, got {len(quantizers)}")
        bad = [(i, q.dim, q.n_codebooks) for i, q in enumerate(quantizers) if q.dim != width or q.n_codebooks != 1]
        if bad:
            raise ValueError(f"every group needs dim={width} and one codebook; got (group, dim, n_codebooks) {bad}")
        sizes = {q.n_codes for q in quantizers}
        if len(sizes) != 1:
            raise ValueError(f"all groups must have the same n_codes, got {sorted(sizes)}")
        self.groups = nn.ModuleList(quantizers)
        self.dim, self.n_codes, self.n_codebooks, self.width = dim, sizes.pop(), groups, width
        self.codebook_lr = getattr(quantizers[0], "codebook_lr", None)

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """Codes per index column, asked of each group's quantizer."""
        return tuple(size for q in self.groups for size in q.codebook_sizes)

    def codebook_parameters(self) -> list[nn.Parameter]:
        """Codebook parameters of every group."""
        return [p for q in self.groups for p in q.codebook_parameters()]

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices ``[..., G]`` -> ``[..., dim]`` (groups concatenated)."""
        if indices.shape[-1:] != (self.n_codebooks,):
            raise ValueError(f"expected indices [..., {self.n_codebooks}], got shape {tuple(indices.shape)}")
        return torch.cat([q.lookup(indices[..., g]) for g, q in enumerate(self.groups)], dim=-1)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize tokens ``z [..., dim]`` group by group."""
        self.check_input(z)
        parts = z.split(self.width, dim=-1)  # G x [..., D/G]
        outs = [q(part) for q, part in zip(self.groups, parts)]
        counts = torch.cat([o.counts for o in outs])  # [G, K]
        perplexity, usage = usage_from_counts(counts)
        losses = {f"group{g}_{k}": v for g, o in enumerate(outs) for k, v in o.losses.items()}
        return QuantizerOutput(
            quantized=torch.cat([o.quantized for o in outs], dim=-1),
            indices=torch.stack([o.indices for o in outs], dim=-1),
            loss=torch.stack([o.loss for o in outs]).mean(),
            commitment_loss=torch.stack([o.commitment_loss for o in outs]).mean(),
            perplexity=perplexity.detach(), usage=usage.detach(), counts=counts.detach(), losses=losses)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, n_codes={self.n_codes}, groups={self.n_codebooks}"
