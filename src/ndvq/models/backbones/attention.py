"""Multi-head self-attention over channels-last tokens ``[B, *S, C]`` for any number of spatial axes.

Two flavours:
    - ``"axial"`` (VideoGPT): one attention along each spatial axis (the other axes act as
      batch), the per-axis results concatenated and mixed by one output projection, which equals
      summing per-axis attention blocks as VideoGPT does. Cost grows with ``sum(S_i)``, not ``prod(S_i)``.
    - ``"full"``: one attention over all ``prod(S)`` positions.

Both use ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels where available) and
size themselves from the input, so any latent shape works.

Example:
    >>> import torch
    >>> attn = NDimAttention(n_dims=3, channels=32, n_head=2, attn_type="axial")
    >>> attn(torch.randn(2, 4, 8, 8, 32)).shape      # [B, T, H, W, C]
    torch.Size([2, 4, 8, 8, 32])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ndvq import nd
from ndvq.errors import ConfigError

__all__ = ["NDimAttention", "ATTN_TYPES", "attend"]

ATTN_TYPES = ("axial", "full")


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d)) v`` over ``[..., N, d]`` tensors, with dropout on the weights.

    Without dropout this is ``F.scaled_dot_product_attention`` (fused kernels). With dropout the
    CPU falls back to a generic path that also runs a masked-row-safe softmax (no mask is ever used
    here) and Bernoulli sampling; the same math written out is about 1.5x faster on CPU (measured in
    ``docs/benchmarks.md``'s setting), with dropout drawn from ``rand >= p`` (inverted dropout).
    """
    if dropout_p == 0.0:
        return F.scaled_dot_product_attention(q, k, v)
    w = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # [..., N, N]
    w = w.softmax(dim=-1)
    w = w * (torch.rand_like(w) >= dropout_p) * (1.0 / (1.0 - dropout_p))
    return w @ v  # [..., N, d]


class NDimAttention(nn.Module):
    """Self-attention on channels-last tokens.

    Args:
        n_dims: number of spatial axes of the input ``[B, *S, C]`` (1..3).
        channels: token width ``C``; must be divisible by ``n_head``.
        n_head: attention heads. Default 2.
        attn_type: ``"axial"`` (one attention per spatial axis, summed) or ``"full"``. Default ``"axial"``.
        attn_dropout: dropout on the attention weights while training. Default 0.0.

    Example:
        >>> attn = NDimAttention(2, 64, n_head=4, attn_type="full")
        >>> attn(torch.randn(1, 8, 8, 64)).shape
        torch.Size([1, 8, 8, 64])
    """

    def __init__(self, n_dims: int, channels: int, n_head: int = 2, attn_type: str = "axial",
                 attn_dropout: float = 0.0) -> None:
        super().__init__()
        nd.check_n_dims(n_dims)
        if attn_type not in ATTN_TYPES:
            raise ConfigError(f"attn_type must be one of {ATTN_TYPES}, got {attn_type!r}")
        if n_head < 1 or channels % n_head:
            raise ConfigError(f"channels ({channels}) must be divisible by n_head ({n_head}) and n_head >= 1")
        if not 0.0 <= attn_dropout < 1.0:
            raise ConfigError(f"attn_dropout must be in [0, 1), got {attn_dropout}")
        self.n_dims, self.channels, self.n_head = n_dims, channels, n_head
        self.attn_type, self.attn_dropout = attn_type, attn_dropout
        self.n_axes = n_dims if attn_type == "axial" else 1
        # one fused projection for q, k, v of every axis; one output projection over all axes
        self.qkv = nn.Linear(channels, 3 * channels * self.n_axes, bias=False)
        self.proj = nn.Linear(channels * self.n_axes, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, *S, C] -> [B, *S, C]``."""
        if x.ndim != self.n_dims + 2 or x.shape[-1] != self.channels:
            raise ValueError(f"expected channels-last tokens [B, *S({self.n_dims} axes), {self.channels}], "
                             f"got shape {list(x.shape)}")
        b, *s, c = x.shape
        h, dh = self.n_head, c // self.n_head
        p = self.attn_dropout if self.training else 0.0
        # unbind (not indexing) so that backward stacks gradients instead of zero-filling full-size buffers
        per_axis = self.qkv(x).view(b, *s, self.n_axes, 3, h, dh).unbind(-4)  # A x [B, *S, 3, H, dh]
        if self.attn_type == "full":
            q, k, v = per_axis[0].reshape(b, -1, 3, h, dh).permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [B, H, N, dh]
            o = attend(q, k, v, p)  # [B, H, N, dh]
            return self.proj(o.transpose(1, 2).reshape(b, *s, c))  # [B, H, N, dh] -> [B, *S, C]
        outs = []
        for a, t in enumerate(per_axis):
            t = t.movedim(1 + a, -2)  # [B, *S\a, 3, H, S_a, dh]
            rest = t.shape[:-4]
            q, k, v = t.reshape(-1, 3, h, s[a], dh).unbind(1)  # 3 x [B*prod(S\a), H, S_a, dh]
            o = attend(q, k, v, p)  # [N', H, S_a, dh]
            o = o.reshape(*rest, h, s[a], dh).movedim(-2, 1 + a)  # [B, *S, H, dh]
            outs.append(o.reshape(b, *s, c))
        return self.proj(torch.cat(outs, dim=-1))  # [B, *S, A*C] -> [B, *S, C]

    def extra_repr(self) -> str:
        return f"n_dims={self.n_dims}, channels={self.channels}, n_head={self.n_head}, attn_type={self.attn_type!r}"
