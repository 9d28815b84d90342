"""SimVQ (Zhu et al. 2024): a frozen random codebook seen through one learned linear map.

The codes are ``E = C W^T`` where ``C [K, D]`` is a fixed random matrix (a buffer) and ``W`` is a
learned ``D x D`` matrix. The codebook loss updates ``W``, which moves *every* code at once, so
codes that are never selected still follow the data and do not die: near-100% usage at large
``K`` without restarts or EMA.

Example:
    >>> import torch
    >>> q = SimVQ(dim=16, n_codes=1024)
    >>> out = q(torch.randn(2, 5, 5, 16))
    >>> out.quantized.shape, [p.shape for p in q.codebook_parameters()]
    (torch.Size([2, 5, 5, 16]), [torch.Size([16, 16])])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Quantizer, QuantizerOutput, all_reduce_, usage_from_counts
from .search import nearest_codes
from .vq import rotation_trick, straight_through

__all__ = ["SimVQ"]


class SimVQ(Quantizer):
    """Vector quantizer with a frozen codebook reparameterised by a learned linear map.

    Args:
        dim: token dimension ``D``.
        n_codes: codes ``K``.
        beta: commitment weight. Default 0.25.
        codebook_lr: separate learning rate for the linear map ``W`` (the codebook parameters),
            read by the trainer. Default None.
        rotation_trick: rotation trick instead of straight-through. Default False.
        chunk_rows: rows per search chunk. Default None (automatic).

    ``loss = beta * ||x - sg(q)||^2 + ||sg(x) - q||^2``; the second term trains ``W`` only.
    """

    def __init__(self, dim: int, n_codes: int, beta: float = 0.25, codebook_lr: float | None = None,
                 rotation_trick: bool = False, chunk_rows: int | None = None) -> None:
        super().__init__()
        if dim < 1 or n_codes < 2:
            raise ValueError(f"need dim >= 1 and n_codes >= 2, got dim={dim}, n_codes={n_codes}")
        self.dim, self.n_codes, self.n_codebooks = dim, n_codes, 1
        self.beta, self.codebook_lr, self.use_rotation_trick, self.chunk_rows = beta, codebook_lr, rotation_trick, chunk_rows
        self.register_buffer("frozen_codebook", torch.randn(n_codes, dim) * dim**-0.5)  # C, never trained
        self.linear = nn.Linear(dim, dim, bias=False)  # W
        nn.init.orthogonal_(self.linear.weight)

    def codebook(self) -> torch.Tensor:
        """Effective codes ``C W^T``: ``[K, D]``."""
        return self.linear(self.frozen_codebook)

    def codebook_parameters(self) -> list[nn.Parameter]:
        """The linear map ``W`` (gets ``codebook_lr``)."""
        return list(self.linear.parameters())

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices ``[...]`` -> quantized vectors ``[..., dim]``."""
        if indices.dtype not in (torch.long, torch.int32):
            raise TypeError(f"indices must be an integer tensor, got {indices.dtype}")
        return F.embedding(indices, self.codebook())

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize tokens ``z [..., dim]``."""
        self.check_input(z)
        lead = z.shape[:-1]
        x = z.reshape(-1, self.dim).float()  # [..., D] -> [N, D]
        with torch.autocast(device_type=x.device.type, enabled=False):
            codebook = self.codebook().float()  # [K, D], differentiable w.r.t. W
        idx = nearest_codes(x, codebook, chunk_rows=self.chunk_rows)
        q = F.embedding(idx, codebook)  # [N, D]
        commitment = F.mse_loss(x, q.detach())
        codebook_loss = F.mse_loss(q, x.detach())
        loss = self.beta * commitment + codebook_loss
        out = rotation_trick(x, q) if self.use_rotation_trick else straight_through(x, q)
        quantized = out.to(z.dtype).reshape(*lead, self.dim)
        counts = x.new_zeros(self.n_codes).index_add_(0, idx, torch.ones_like(idx, dtype=x.dtype))
        counts = all_reduce_(counts, self.training)[None]  # [1, K]
        perplexity, usage = usage_from_counts(counts)
        return QuantizerOutput(quantized=quantized, indices=idx.reshape(lead), loss=loss, commitment_loss=commitment,
                               perplexity=perplexity.detach(), usage=usage.detach(), counts=counts.detach(),
                               losses={"commitment": commitment.detach(), "codebook": codebook_loss.detach()})

    def extra_repr(self) -> str:
        return f"dim={self.dim}, n_codes={self.n_codes}"
