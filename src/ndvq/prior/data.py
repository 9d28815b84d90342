"""The prior's data: a run's split encoded once with the frozen autoencoder, and tiles cropped from the codes.

Every training tile is a random crop of ``block`` finest-grid positions (a whole number of coarsest-grid
positions, so a hierarchical model's grids stay aligned) out of one item's code grids, flattened in the
order of :mod:`ndvq.prior.layout`. The crops of step ``s`` depend only on ``(seed, s)`` (exact resume);
the validation tiles are a fixed set.

Example:
    >>> codes = encode_split(model, dataset, max_items=64)            # doctest: +SKIP
    >>> tiles = TileSampler(codes, layout_for(model, item_spatial, block))  # doctest: +SKIP
    >>> tiles.batch(torch.Generator().manual_seed(0), 32).shape       # doctest: +SKIP
    torch.Size([32, 64])
"""

from __future__ import annotations

import torch

from ndvq.prior.layout import Tile, TokenLayout
from ndvq.run.codes import encode_grids

__all__ = ["encode_split", "TileSampler", "step_generator"]


@torch.no_grad()
def encode_split(model, ds, max_items: int, batch_size: int = 64) -> list[torch.Tensor]:
    """Integer codes ``[N, *L(, G)]`` per grid of the first ``max_items`` items of ``ds`` (same-shape items)."""
    per_grid: list[list[torch.Tensor]] = []
    n = min(len(ds), max_items)
    for start in range(0, n, batch_size):
        x = torch.stack([ds[i]["data"] for i in range(start, min(start + batch_size, n))])
        grids = encode_grids(model, x)
        per_grid = per_grid or [[] for _ in grids]
        for j, g in enumerate(grids):
            per_grid[j].append(g.cpu().to(torch.int32))
    return [torch.cat(parts) for parts in per_grid]


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of the crops of one training step: depends only on ``(seed, step)``."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))


class TileSampler:
    """Random ``block``-sized crops of encoded items, flattened into token sequences.

    Args:
        codes: per grid, the items' codes ``[N, *L(, G)]`` (:func:`encode_split`).
        layout: the layout of one item (``layout_for(model, item_spatial, block)``); its first tile is the
            crop shape.
    """

    def __init__(self, codes: list[torch.Tensor], layout: TokenLayout):
        self.codes, self.layout = codes, layout
        first = layout.tiles[0]
        self.extents = [tuple(s.stop - s.start for s in sl) for sl in first.slices]  # per grid [*l]
        self.crop = TokenLayout(self.extents, layout.columns, None, layout.column_axis)
        self.tile: Tile = self.crop.tiles[0]
        fine, coarse = layout.grid_shapes[-1], layout.grid_shapes[0]
        self.ratios = [[f // g for f, g in zip(fine, shape)] for shape in layout.grid_shapes]  # fine / grid
        self.step = [max(f // max(c, 1), 1) for f, c in zip(fine, coarse)]  # crop offsets: whole coarse positions
        self.room = [(f - e) // s + 1 for f, e, s in zip(fine, self.extents[-1], self.step)]  # choices per axis

    def __len__(self) -> int:
        return int(self.codes[0].shape[0])

    def crop_tokens(self, item: int, offset: list[int]) -> torch.Tensor:
        """The ``[T]`` tokens of item ``item`` cropped at ``offset`` (finest-grid positions)."""
        grids = []
        for codes, ext, ratio in zip(self.codes, self.extents, self.ratios):
            sl = tuple(slice(o // r, o // r + e) for o, r, e in zip(offset, ratio, ext))
            grids.append(codes[item][sl])
        return self.crop.flatten(grids)[0]

    def batch(self, gen: torch.Generator, n: int) -> torch.Tensor:
        """``[n, T]`` tokens of ``n`` random crops (items and offsets drawn from ``gen``)."""
        items = torch.randint(0, len(self), (n,), generator=gen).tolist()
        offs = [torch.randint(0, r, (n,), generator=gen).tolist() for r in self.room]
        return torch.stack([self.crop_tokens(i, [o[b] * s for o, s in zip(offs, self.step)])
                            for b, i in enumerate(items)])

    def fixed(self, seed: int, n: int) -> torch.Tensor:
        """A fixed set of ``n`` crops (the validation tiles): item ``b % N`` at a seeded offset."""
        gen = torch.Generator().manual_seed(int(seed))
        offs = [torch.randint(0, r, (n,), generator=gen).tolist() for r in self.room]
        return torch.stack([self.crop_tokens(b % len(self), [o[b] * s for o, s in zip(offs, self.step)])
                            for b in range(n)])
