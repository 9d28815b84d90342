"""``CodePrior``: a small causal transformer over one tile's tokens (the order of :mod:`ndvq.prior.layout`).

Token ``i`` is predicted from the start token and tokens ``0..i-1``. The input at position ``i`` is the
embedding of the previous token (the start token at ``i = 0``; tokens of column ``c`` use rows
``offset[c] .. offset[c] + K_c`` of one table sized ``sum(codebook_sizes) + 1``) plus what is known about
token ``i`` before it is decoded: its column, its grid and its coordinates inside the tile (one learned
table per axis, summed). Pre-norm blocks with ``torch.nn.functional.scaled_dot_product_attention``; the
logits cover the largest vocabulary and are masked to each token's own one. :meth:`CodePrior.step`
decodes one token at a time with a key/value cache; :meth:`CodePrior.forward` runs a whole (prefix of a)
tile at once (teacher forcing; the no-cache sampling path).

Example:
    >>> from ndvq.prior.layout import TokenLayout
    >>> tile = TokenLayout([(4, 4)], [(16,)]).tiles[0]
    >>> prior = CodePrior([16], n_grids=1, max_coords=[4, 4], d_model=16, n_layers=1, n_heads=2)
    >>> meta = TileMeta.of(tile)
    >>> prior(torch.zeros(2, tile.length, dtype=torch.long), meta).shape
    torch.Size([2, 16, 16])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ndvq.prior.layout import Tile

__all__ = ["CodePrior", "TileMeta", "KVCache", "nll_of", "bits"]


@dataclass
class TileMeta:
    """A tile's per-token facts as tensors: ``column``, ``grid``, ``vocab`` ``[T]`` and ``coords [T, n_dims]``."""

    column: torch.Tensor
    grid: torch.Tensor
    vocab: torch.Tensor
    coords: torch.Tensor

    @classmethod
    def of(cls, tile: Tile, device: torch.device | str = "cpu") -> TileMeta:
        """The tensors of a :class:`~ndvq.prior.layout.Tile`."""
        t = lambda a: torch.as_tensor(a, dtype=torch.long, device=device)  # noqa: E731
        return cls(t(tile.column), t(tile.grid), t(tile.vocab), t(tile.coords))

    @property
    def length(self) -> int:
        return int(self.column.shape[0])


class KVCache:
    """Keys and values of every layer for ``batch`` sequences of up to ``length`` tokens.

    Args:
        n_layers: transformer blocks.
        batch: sequences decoded together.
        n_heads: attention heads.
        length: the tile's token count.
        head_dim: ``d_model // n_heads``.
    """

    def __init__(self, n_layers: int, batch: int, n_heads: int, length: int, head_dim: int):
        self.k = [torch.zeros(batch, n_heads, length, head_dim) for _ in range(n_layers)]
        self.v = [torch.zeros(batch, n_heads, length, head_dim) for _ in range(n_layers)]
        self.size = 0  # tokens stored


class _Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))``, ``x + mlp(ln(x))``."""

    def __init__(self, d: int, n_heads: int, mlp_ratio: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_ratio * d), nn.GELU(), nn.Linear(mlp_ratio * d, d))
        self.drop = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        return tuple(a.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for a in (q, k, v))  # [B, H, t, Dh]

    def _out(self, x: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        att = att.transpose(1, 2).reshape(x.shape)  # [B, H, t, Dh] -> [B, t, d]
        x = x + self.drop(self.proj(att))
        return x + self.drop(self.mlp(self.ln2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(x)
        p = self.dropout if self.training else 0.0
        return self._out(x, F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p))

    def step(self, x: torch.Tensor, cache: KVCache, layer: int) -> torch.Tensor:
        """``x [B, 1, d]`` at position ``cache.size``; its key and value are stored in ``cache``."""
        q, k, v = self._heads(x)
        i = cache.size
        cache.k[layer][:, :, i:i + 1], cache.v[layer][:, :, i:i + 1] = k, v
        att = F.scaled_dot_product_attention(q, cache.k[layer][:, :, :i + 1], cache.v[layer][:, :, :i + 1])
        return self._out(x, att)


class CodePrior(nn.Module):
    """Autoregressive model of one tile's tokens (see the module docstring).

    Args:
        codebook_sizes: the autoencoder's ``codebook_sizes`` (one per global column).
        n_grids: code grids (2 for a hierarchical model). Default 1.
        max_coords: per axis, the largest tile extent (coordinates are ``0 .. max - 1``).
        d_model: width. Default 128.
        n_layers: blocks. Default 4.
        n_heads: attention heads. Default 4.
        mlp_ratio: MLP width / ``d_model``. Default 4.
        dropout: residual dropout. Default 0.0.
    """

    def __init__(self, codebook_sizes: list[int], n_grids: int = 1, max_coords: list[int] = (1,), d_model: int = 128,
                 n_layers: int = 4, n_heads: int = 4, mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        sizes = [int(k) for k in codebook_sizes]
        self.codebook_sizes, self.max_coords = sizes, [int(m) for m in max_coords]
        self.n_heads, self.vocab = n_heads, max(sizes)
        self.register_buffer("offsets", torch.tensor([0, *sizes[:-1]]).cumsum(0), persistent=False)
        self.start_id = sum(sizes)
        self.tok = nn.Embedding(sum(sizes) + 1, d_model)  # every column's codes, then the start token
        self.col = nn.Embedding(len(sizes), d_model)
        self.grid = nn.Embedding(int(n_grids), d_model)
        self.axes = nn.ModuleList(nn.Embedding(m, d_model) for m in self.max_coords)
        self.blocks = nn.ModuleList(_Block(d_model, n_heads, mlp_ratio, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, self.vocab)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def check_tile(self, meta: TileMeta) -> None:
        """ValueError unless the tile's columns, grids and coordinates fit this prior's tables."""
        too_far = [int(meta.coords[:, a].max()) for a in range(meta.coords.shape[1])]
        if meta.coords.shape[1] != len(self.axes) or any(c >= m for c, m in zip(too_far, self.max_coords)):
            raise ValueError(f"a tile with coordinates up to {too_far} does not fit a prior trained on tiles of "
                             f"{self.max_coords}")

    def _target_embed(self, meta: TileMeta, sl: slice) -> torch.Tensor:
        """What is known about tokens ``sl`` before they are decoded: column + grid + per-axis position."""
        e = self.col(meta.column[sl]) + self.grid(meta.grid[sl])
        for a, table in enumerate(self.axes):
            e = e + table(meta.coords[sl, a])
        return e  # [t, d]

    def _mask(self, logits: torch.Tensor, vocab: torch.Tensor) -> torch.Tensor:
        """Logits ``[..., t, K]`` with the entries past each token's own vocabulary set to ``-inf``."""
        outside = torch.arange(self.vocab, device=logits.device) >= vocab[:, None]  # [t, K]
        return logits.masked_fill(outside, float("-inf"))

    def forward(self, tokens: torch.Tensor, meta: TileMeta) -> torch.Tensor:
        """Teacher-forced logits ``[B, t, K]`` of positions ``0..t-1`` from ``tokens [B, t]`` (the last token is
        not used: position ``j`` sees tokens ``< j``)."""
        b, t = tokens.shape
        ids = tokens[:, :-1] + self.offsets[meta.column[:t - 1]]  # [B, t-1] rows of the shared table
        prev = torch.cat([torch.full((b, 1), self.start_id, device=tokens.device), ids], 1)  # [B, t]
        x = self.tok(prev) + self._target_embed(meta, slice(0, t))
        for blk in self.blocks:
            x = blk(x)
        return self._mask(self.head(self.ln_f(x)), meta.vocab[:t])

    def new_cache(self, batch: int, length: int) -> KVCache:
        """An empty :class:`KVCache` for ``batch`` sequences of ``length`` tokens."""
        d = self.tok.embedding_dim
        return KVCache(len(self.blocks), batch, self.n_heads, length, d // self.n_heads)

    def step(self, prev: torch.Tensor | None, meta: TileMeta, cache: KVCache) -> torch.Tensor:
        """Logits ``[B, K]`` of token ``cache.size`` given the previous token ``prev [B]`` (None at position 0).

        Args:
            prev: the token at ``cache.size - 1`` (a code of its own column), or None for the first token.
            meta: the tile's facts.
            cache: keys and values of the earlier positions; advanced by one.
        """
        i, b = cache.size, cache.k[0].shape[0]
        ids = (torch.full((b,), self.start_id) if prev is None else prev.long() + self.offsets[meta.column[i - 1]])
        x = self.tok(ids[:, None]) + self._target_embed(meta, slice(i, i + 1))  # [B, 1, d]
        for layer, blk in enumerate(self.blocks):
            x = blk.step(x, cache, layer)
        cache.size += 1
        return self._mask(self.head(self.ln_f(x)), meta.vocab[i:i + 1])[:, 0]

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def nll_of(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood in nats per token of ``tokens [B, T]`` under ``logits [B, T, K]``."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1))


def bits(nats: float | torch.Tensor):
    """Nats -> bits."""
    return nats / math.log(2)
