"""How one item's code grids become token sequences, and back: the order shared by the prior and the codec.

The order (the one owner of it): the latent is cut into **tiles** of ``block`` positions per axis of the
finest (bottom) grid; each tile is one independent sequence. Inside a tile: grid by grid (a hierarchical
model: top before bottom), then **column by column** (residual levels coarse to fine, groups in order),
then **raster over positions** (last axis fastest). So the first ``k`` residual levels are a prefix of each
tile's sequence (``--levels k`` drops a suffix). Which grid, column and position a token holds never
depends on the codes, so a decoder knows every token's vocabulary and position before it decodes it.

Example:
    >>> import torch
    >>> lay = TokenLayout(grid_shapes=[(5, 3)], columns=[(16,)], block=(4, 4))
    >>> [t.length for t in lay.tiles]
    [12, 3]
    >>> g = [torch.randint(0, 16, (5, 3))]
    >>> torch.equal(lay.unflatten(lay.flatten(g))[0], g[0])
    True
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

__all__ = ["Tile", "TokenLayout", "TokenModel", "layout_for"]


@dataclass(frozen=True)
class Tile:
    """One sequence: per grid, the slices it covers, and per token its grid, column, vocabulary and coordinates.

    Attributes:
        slices: per grid, one ``slice`` per spatial axis.
        grid: ``[T]`` grid index of each token (0 = top for a hierarchical model).
        column: ``[T]`` global column index of each token (index into the model's ``codebook_sizes``).
        vocab: ``[T]`` codebook size of each token's column.
        coords: ``[T, n_dims]`` position of each token inside the tile, in its own grid's units.
    """

    slices: tuple[tuple[slice, ...], ...]
    grid: np.ndarray
    column: np.ndarray
    vocab: np.ndarray
    coords: np.ndarray

    @property
    def length(self) -> int:
        """Number of tokens."""
        return int(self.grid.shape[0])


@dataclass
class TokenLayout:
    """The token order for one item's code grids (see the module docstring).

    Args:
        grid_shapes: per grid, the spatial latent shape ``(*L,)`` (without a column axis).
        columns: per grid, the codebook size of each index column (``(K,)`` for a single codebook).
        block: tile size in positions of the last (finest) grid per axis, rounded up to a whole number of
            positions of the coarsest grid; None = one tile. Coarser grids use ``block // factor``. Default None.
        column_axis: per grid, whether its codes carry a trailing column axis ``[*L, G]`` (multi-codebook
            quantizers) rather than ``[*L]``. Default None (a column axis where a grid has several columns).
    """

    grid_shapes: list[tuple[int, ...]]
    columns: list[tuple[int, ...]]
    block: tuple[int, ...] | None = None
    column_axis: list[bool] | None = None
    tiles: list[Tile] = field(init=False)

    def __post_init__(self) -> None:
        self.grid_shapes = [tuple(int(s) for s in g) for g in self.grid_shapes]
        self.columns = [tuple(int(k) for k in c) for c in self.columns]
        if self.column_axis is None:
            self.column_axis = [len(c) > 1 for c in self.columns]
        fine = self.grid_shapes[-1]
        ratio = [max(f // max(g, 1) for g in axis) for f, axis in zip(fine, zip(*self.grid_shapes))]
        block = tuple(fine) if self.block is None else tuple(  # a whole number of coarsest-grid positions
            min(math.ceil(int(b) / r) * r, f) for b, r, f in zip(self.block, ratio, fine))
        self.block = block
        blocks = [tuple(max(1, b * g // f) for b, g, f in zip(block, shape, fine)) for shape in self.grid_shapes]
        counts = [math.ceil(f / b) for f, b in zip(fine, block)]
        self.tiles = [self._tile(idx, blocks) for idx in itertools.product(*(range(c) for c in counts))]

    def _tile(self, idx: tuple[int, ...], blocks: list[tuple[int, ...]]) -> Tile:
        slices, grid, column, vocab, coords = [], [], [], [], []
        offset = 0
        for g, (shape, cols, blk) in enumerate(zip(self.grid_shapes, self.columns, blocks)):
            sl = tuple(slice(i * b, min((i + 1) * b, s)) for i, b, s in zip(idx, blk, shape))
            slices.append(sl)
            extent = [s.stop - s.start for s in sl]
            pos = np.stack(np.meshgrid(*[np.arange(e) for e in extent], indexing="ij"), -1).reshape(-1, len(extent))
            for c, k in enumerate(cols):  # column-major, then raster over positions
                n = pos.shape[0]
                grid.append(np.full(n, g))
                column.append(np.full(n, offset + c))
                vocab.append(np.full(n, k))
                coords.append(pos)
            offset += len(cols)
        cat = lambda parts: np.concatenate(parts).astype(np.int64)  # noqa: E731
        return Tile(tuple(slices), cat(grid), cat(column), cat(vocab), np.concatenate(coords).astype(np.int64))

    @property
    def n_tokens(self) -> int:
        """Tokens of the whole item."""
        return sum(t.length for t in self.tiles)

    def _columns_view(self, grid: torch.Tensor, g: int) -> torch.Tensor:
        # [*L] or [*L, G] -> [*L, G]
        return grid if self.column_axis[g] else grid.unsqueeze(-1)

    def flatten(self, grids: list[torch.Tensor]) -> list[torch.Tensor]:
        """One item's grids (``[*L]`` or ``[*L, G]`` each) -> one ``[T]`` long tensor per tile."""
        out = []
        for tile in self.tiles:
            parts = []
            for g, sl in enumerate(tile.slices):
                part = self._columns_view(grids[g], g)[sl]  # [*l, G]
                parts.append(part.movedim(-1, 0).reshape(-1))  # [G * prod(l)]: column-major, raster
            out.append(torch.cat(parts).long())
        return out

    def unflatten(self, tokens: list[torch.Tensor]) -> list[torch.Tensor]:
        """Inverse of :meth:`flatten`: per-tile ``[T]`` tokens -> the item's grids (``[*L]`` or ``[*L, G]``)."""
        grids = [torch.zeros(*s, len(c), dtype=torch.long) for s, c in zip(self.grid_shapes, self.columns)]
        for tile, seq in zip(self.tiles, tokens):
            start = 0
            for g, sl in enumerate(tile.slices):
                extent = [s.stop - s.start for s in sl]
                n = len(self.columns[g]) * math.prod(extent)
                grids[g][sl] = seq[start:start + n].reshape(len(self.columns[g]), *extent).movedim(0, -1)  # [*l, G]
                start += n
        return [g if axis else g[..., 0] for g, axis in zip(grids, self.column_axis)]


def layout_for(model, spatial: tuple[int, ...], block: tuple[int, ...] | None = None) -> TokenLayout:
    """The :class:`TokenLayout` of ``model``'s codes for one item of spatial shape ``spatial``.

    Args:
        model: an autoencoder with discrete codes (``model.codebook_sizes`` non-empty).
        spatial: the item's input spatial shape.
        block: tile size in positions of the finest grid; None = one tile. Default None.
    """
    shapes = model.code_shapes(tuple(spatial))
    n = len(model.latent_shape(tuple(spatial)))
    sizes = list(model.codebook_sizes)
    grid_shapes, columns, axis = [], [], []
    for shape in shapes:
        k = shape[n] if len(shape) > n else 1
        grid_shapes.append(tuple(shape[:n]))
        columns.append(tuple(sizes[:k]))
        axis.append(len(shape) > n)
        sizes = sizes[k:]
    return TokenLayout(grid_shapes, columns, block, axis)


class TokenModel(Protocol):
    """A probability model over one tile's tokens, asked in order (the codec's and the sampler's contract).

    ``start(tile)`` begins a tile; then, for each token in order, ``probabilities()`` gives the next token's
    distribution (a 1-D float64 numpy array of length ``tile.vocab[i]``, summing to 1; the same inputs must
    give the same bits, in any process) and ``push(token)`` appends the token that was coded or sampled.
    """

    def start(self, tile: Tile) -> None: ...

    def probabilities(self) -> np.ndarray: ...

    def push(self, token: int) -> None: ...
