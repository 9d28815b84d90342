"""Residual VQ (SoundStream / EnCodec): each level quantizes what the previous levels missed.

Composition, not inheritance: ``ResidualVQ`` wraps any list of quantizers of the same ``dim``
(by default ``num_quantizers`` :class:`~ndvq.quantizers.vq.VectorQuantizer` built with the given
options). Quantizer dropout trains a variable bitrate: while training, each sample (leading index
of the tokens) keeps only its first ``n ~ U{1..L}`` levels with probability ``quantizer_dropout``.
All levels always run (masked, not skipped), so there is no Python branch on random values and
every level's statistics keep updating on the true residual.

Example:
    >>> import torch
    >>> rvq = ResidualVQ(dim=32, n_codes=256, num_quantizers=4)
    >>> out = rvq(torch.randn(2, 6, 6, 32))
    >>> out.indices.shape, rvq.n_codebooks
    (torch.Size([2, 6, 6, 4]), 4)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import Quantizer, QuantizerOutput, usage_from_counts
from .vq import VectorQuantizer

__all__ = ["ResidualVQ", "unit_length_lookup"]


#: The most stages (residual levels) or groups a quantizer takes: more is never useful, and a file asking
#: for millions would allocate a codebook each before failing (the config schema has the same caps).
MAX_STAGES = 64


def unit_length_lookup(cosine: bool, codebook_dim: int | None, dim: int) -> bool:
    """Whether a vector-quantizer level returns unit-length codes: a cosine search with no projection below
    ``dim`` (``codebook_dim`` None or >= ``dim``). Residual levels built so cannot refine each other."""
    return bool(cosine) and (codebook_dim is None or int(codebook_dim) >= dim)


class ResidualVQ(Quantizer):
    """Residual vector quantizer: ``q = sum_l q_l``, ``q_l = Q_l(z - sum_{j<l} sg(q_j))``.

    Args:
        dim: token dimension ``D``.
        n_codes: codes per level ``K``.
        num_quantizers: levels ``L``. Default 4.
        quantizer_dropout: probability that a training sample uses a random prefix of the levels.
            Default 0.0.
        beta: commitment weight of each level. Default 0.25.
        ema_decay: EMA decay of each level. Default 0.99.
        quantizers: optional list of already-built quantizers to wrap (overrides the above).
        **vq_options: :class:`VectorQuantizer` options for every level (``update``, ``init``, ...).
            ``cosine=True`` (the VQ default) needs ``codebook_dim < dim``: a cosine lookup in ``dim`` itself
            returns unit-length codes, and a sum of unit vectors cannot shrink with the residual (a
            UserWarning says so; measured: levels 3-4 of a 4-level model added 0.04 dB).

    ``indices`` are ``[..., L]``; ``loss`` sums the levels' losses; ``commitment_loss`` is
    ``mean((z - sg(q))**2)`` of the full reconstruction; ``counts`` is ``[L, K]``.
    """

    def __init__(self, dim: int, n_codes: int, num_quantizers: int = 4, quantizer_dropout: float = 0.0,
                 beta: float = 0.25, ema_decay: float = 0.99, quantizers: Sequence[Quantizer] | None = None,
                 **vq_options) -> None:
        super().__init__()
        if quantizers is None:
            if not 1 <= num_quantizers <= MAX_STAGES:
                raise ValueError(f"num_quantizers must be in [1, {MAX_STAGES}], got {num_quantizers}")
            quantizers = [VectorQuantizer(dim, n_codes, beta=beta, ema_decay=ema_decay, **vq_options)
                          for _ in range(num_quantizers)]
        quantizers = list(quantizers)
        bad = [(i, q.dim, q.n_codebooks) for i, q in enumerate(quantizers) if q.dim != dim or q.n_codebooks != 1]
        if bad:
            raise ValueError(f"every level needs dim={dim} and one codebook; got (level, dim, n_codebooks) {bad}")
        unit = [i for i, q in enumerate(quantizers)
                if unit_length_lookup(getattr(q, "cosine", False), getattr(q, "codebook_dim", 0), dim)]
        if len(quantizers) > 1 and unit:  # a warning, not an error: checkpoints trained so must still load
            warnings.warn(
                f"cosine=True without a codebook_dim projection makes every residual level output a unit-length "
                f"vector (levels {unit}), so later levels cannot refine what the first missed; set cosine=False "
                f"(model.quantizer.cosine=false: Euclidean search at the residual's own scale) or codebook_dim below "
                f"dim={dim} (each level's out-projection learns its scale)", UserWarning, stacklevel=2)
        sizes = {q.n_codes for q in quantizers}
        if len(sizes) != 1:
            raise ValueError(f"all levels must have the same n_codes, got {sorted(sizes)}")
        if not 0.0 <= quantizer_dropout <= 1.0:
            raise ValueError(f"quantizer_dropout must be in [0, 1], got {quantizer_dropout}")
        self.levels = nn.ModuleList(quantizers)
        self.dim, self.n_codes, self.n_codebooks = dim, sizes.pop(), len(quantizers)
        self.quantizer_dropout = quantizer_dropout
        self.codebook_lr = getattr(quantizers[0], "codebook_lr", None)

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """Codes per index column, asked of each level's quantizer."""
        return tuple(size for q in self.levels for size in q.codebook_sizes)

    def codebook_parameters(self) -> list[nn.Parameter]:
        """Codebook parameters of every level."""
        return [p for q in self.levels for p in q.codebook_parameters()]

    def lookup(self, indices: torch.Tensor, n_levels: int | None = None) -> torch.Tensor:
        """Indices ``[..., L]`` -> ``[..., dim]`` (sum of the first ``n_levels`` levels; default all)."""
        if indices.shape[-1:] != (self.n_codebooks,):
            raise ValueError(f"expected indices [..., {self.n_codebooks}], got shape {tuple(indices.shape)}")
        n = self.n_codebooks if n_levels is None else n_levels
        return sum(q.lookup(indices[..., i]) for i, q in enumerate(self.levels[:n]))

    def _keep_mask(self, z: torch.Tensor) -> torch.Tensor:
        """``[L, B, 1, ..., 1]`` float mask of the levels each sample keeps (dropout in training)."""
        b = z.shape[0] if z.ndim > 1 else 1
        n_levels = self.n_codebooks
        level = torch.arange(n_levels, device=z.device).view(-1, 1)  # [L, 1]
        keep = torch.ones(n_levels, b, device=z.device, dtype=torch.bool)
        if self.training and self.quantizer_dropout > 0:
            n_keep = torch.randint(1, n_levels + 1, (1, b), device=z.device)  # [1, B]
            drop = torch.rand(1, b, device=z.device) < self.quantizer_dropout
            keep = ~drop | (level < n_keep)
        return keep.view(n_levels, b, *([1] * (z.ndim - 1))).to(z.dtype)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize tokens ``z [..., dim]`` with all levels."""
        self.check_input(z)
        keep = self._keep_mask(z)  # [L, B, 1, ..., 1]
        residual = z
        quantized = torch.zeros_like(z)
        loss = z.new_zeros((), dtype=torch.float32)
        indices, counts, losses = [], [], {}
        for i, q in enumerate(self.levels):
            out = q(residual)
            quantized = quantized + keep[i] * out.quantized
            residual = residual - out.quantized.detach()
            loss = loss + out.loss
            indices.append(out.indices)
            counts.append(out.counts)
            losses.update({f"level{i}_{k}": v for k, v in out.losses.items()})
        counts = torch.cat(counts)  # [L, K]
        perplexity, usage = usage_from_counts(counts)
        commitment = F.mse_loss(z.float(), quantized.detach().float())
        return QuantizerOutput(quantized=quantized, indices=torch.stack(indices, dim=-1), loss=loss,
                               commitment_loss=commitment, perplexity=perplexity.detach(), usage=usage.detach(),
                               counts=counts.detach(), losses=losses)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, n_codes={self.n_codes}, levels={self.n_codebooks}, dropout={self.quantizer_dropout}"
