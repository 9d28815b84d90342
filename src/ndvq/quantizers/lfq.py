"""Lookup-free quantization (LFQ, Yu et al. 2023, MAGVIT-v2): a binary code per channel.

Tokens are projected to ``bits = log2(n_codes)`` channels; each channel is quantized to its sign
(``-1`` or ``+1``) with a straight-through gradient, so the implicit codebook is all ``2**bits``
corners of the hypercube and no nearest-code search is needed.

The entropy loss keeps every code in use: ``mean_n H(p(c | x_n)) - gamma * H(mean_n p(c | x_n))``
with ``p(c | x) ~ softmax(-||x - c||^2 / T)``. ``p`` factorises over bits, so the per-token
entropy is exact; the codebook entropy uses the per-bit marginals of the batch average (an upper
bound of the exact one, as in BSQ), which keeps memory ``O(N * bits)`` for any codebook size.

Example:
    >>> import torch
    >>> lfq = LFQ(dim=32, n_codes=2**10)
    >>> out = lfq(torch.randn(2, 7, 32))
    >>> out.indices.shape, lfq.bits
    (torch.Size([2, 7]), 10)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Quantizer, QuantizerOutput, all_reduce_, usage_from_counts

__all__ = ["LFQ"]


def _binary_entropy(p: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return -(p * (p + eps).log() + (1 - p) * (1 - p + eps).log())


class LFQ(Quantizer):
    """Lookup-free quantizer.

    Args:
        dim: token dimension ``D``.
        n_codes: implicit codebook size, a power of two ``2**bits`` (bits <= 62).
        beta: commitment weight on ``mean((x - sg(sign(x)))**2)``. Default 0.25.
        entropy_weight: weight of the entropy loss (config ``lfq_entropy_weight``). Default 0.1.
        diversity_gamma: weight of the codebook-entropy term inside it (config
            ``lfq_diversity_gamma``). Default 1.0.
        temperature: softmax temperature of ``p(c | x)``. Default 0.01.
        codebook_scale: value of the binary codes (``+-codebook_scale``). Default 1.0.
    """

    def __init__(self, dim: int, n_codes: int, beta: float = 0.25, entropy_weight: float = 0.1,
                 diversity_gamma: float = 1.0, temperature: float = 0.01, codebook_scale: float = 1.0) -> None:
        super().__init__()
        if n_codes < 2 or n_codes & (n_codes - 1):
            raise ValueError(f"LFQ needs n_codes = 2**bits (a power of two >= 2), got {n_codes}")
        self.bits = n_codes.bit_length() - 1
        if self.bits > 62:
            raise ValueError(f"LFQ supports at most 2**62 codes, got 2**{self.bits}")
        self.dim, self.n_codes, self.n_codebooks = dim, n_codes, 1
        self.beta, self.entropy_weight, self.diversity_gamma = beta, entropy_weight, diversity_gamma
        self.temperature, self.codebook_scale = temperature, codebook_scale
        self.register_buffer("mask", 2 ** torch.arange(self.bits), persistent=False)  # [bits]
        self.project_in = nn.Linear(dim, self.bits) if dim != self.bits else nn.Identity()
        self.project_out = nn.Linear(self.bits, dim) if dim != self.bits else nn.Identity()

    def codebook_parameters(self) -> list[nn.Parameter]:
        """LFQ has no learned codebook: empty list."""
        return []

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices ``[...]`` -> quantized vectors ``[..., dim]``."""
        if indices.dtype not in (torch.long, torch.int32):
            raise TypeError(f"indices must be an integer tensor, got {indices.dtype}")
        bits = (indices.long().unsqueeze(-1) & self.mask) != 0  # [..., bits]
        codes = torch.where(bits, self.codebook_scale, -self.codebook_scale).float()
        return self.project_out(codes)

    def _entropy_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, per-token entropy, codebook entropy) in nats; ``x [N, bits]`` fp32."""
        # ||x - c||^2 differs between c_i = +s and -s by 4 s x_i, so p(bit_i = +) = sigmoid(4 s x_i / T)
        p_pos = torch.sigmoid(4 * self.codebook_scale * x / self.temperature)  # [N, bits]
        per_token = _binary_entropy(p_pos).sum(dim=-1).mean()
        avg = p_pos.mean(dim=0)  # [bits]
        if self.training:
            n = x.new_full((1,), x.shape[0])
            stats = all_reduce_(torch.cat([avg * x.shape[0], n]).detach(), True)
            # use the global average but keep this rank's gradient (fixed-size all_reduce)
            avg = avg + (stats[:-1] / stats[-1] - avg).detach()
        codebook = _binary_entropy(avg).sum()
        return per_token - self.diversity_gamma * codebook, per_token, codebook

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize tokens ``z [..., dim]``."""
        self.check_input(z)
        lead = z.shape[:-1]
        x = self.project_in(z).reshape(-1, self.bits).float()  # [..., D] -> [N, bits]
        s = self.codebook_scale
        q = torch.where(x > 0, s, -s)
        idx = ((x > 0).long() * self.mask).sum(dim=-1)  # [N]
        commitment = F.mse_loss(x, q)
        loss = self.beta * commitment
        losses = {"commitment": commitment.detach()}
        if self.entropy_weight > 0 and self.training:
            ent_loss, per_token, codebook = self._entropy_loss(x)
            loss = loss + self.entropy_weight * ent_loss
            losses.update(entropy=ent_loss.detach(), per_token_entropy=per_token.detach(),
                          codebook_entropy=codebook.detach())
        st = x + (q - x).detach()
        quantized = self.project_out(st.to(z.dtype)).reshape(*lead, self.dim)
        counts = x.new_zeros(self.n_codes).index_add_(0, idx, torch.ones_like(idx, dtype=x.dtype))
        counts = all_reduce_(counts, self.training)[None]  # [1, K]
        perplexity, usage = usage_from_counts(counts)
        return QuantizerOutput(quantized=quantized, indices=idx.reshape(lead), loss=loss, commitment_loss=commitment,
                               perplexity=perplexity.detach(), usage=usage.detach(), counts=counts.detach(),
                               losses=losses)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, n_codes={self.n_codes}, bits={self.bits}"
