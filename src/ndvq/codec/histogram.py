"""The static probability model: per index column, the counts of the run's train-split codes (+1 each).

Computed once per checkpoint and stored with the run as ``RUN/code_histogram.json`` (``{"fingerprint",
"codebook_sizes", "counts", "n_items", "split"}``, written atomically); recomputed when the model's
fingerprint (:func:`ndvq.run.codesfile.codes_fingerprint`) differs from the stored one. Every code
position of the padded whole items is counted (the codec codes the padded grid too), over at most
``max_items`` items spread evenly over the split.

Example:
    >>> import numpy as np
    >>> from ndvq.prior import TokenLayout
    >>> hm = HistogramModel([[3, 1], [0, 0, 4]])
    >>> hm.start(TokenLayout([(2,)], [(2, 3)]).tiles[0])
    >>> hm.probabilities().round(3).tolist()
    [0.667, 0.333]
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from ndvq import build
from ndvq.prior.layout import Tile
from ndvq.run.codes import encode_grids
from ndvq.run.rundir import atomic_write

__all__ = ["HistogramModel", "histogram_for_run", "HISTOGRAM_FILE"]

HISTOGRAM_FILE = "code_histogram.json"


class HistogramModel:
    """A :class:`~ndvq.prior.TokenModel` whose next-token distribution depends only on the token's column.

    Args:
        counts: per column of the model's ``codebook_sizes``, the count of every code (``+1`` is added).
    """

    static = True
    """The distribution never depends on earlier tokens (the codec codes whole columns at once)."""

    def __init__(self, counts: list[list[int]]) -> None:
        self.counts = [[int(c) for c in col] for col in counts]
        self._p = [(np.asarray(c, np.float64) + 1) / (sum(c) + len(c)) for c in self.counts]
        self._tile: Tile | None = None
        self._i = 0

    @property
    def fingerprint(self) -> str:
        """16 hex digits of a SHA-256 over the counts (the header names the table it was coded with)."""
        return hashlib.sha256(json.dumps(self.counts).encode()).hexdigest()[:16]

    def column_probabilities(self, column: int) -> np.ndarray:
        """The distribution of every token of one column (float64, sums to 1)."""
        return self._p[column]

    def start(self, tile: Tile) -> None:
        """Begin a tile."""
        self._tile, self._i = tile, 0

    def probabilities(self) -> np.ndarray:
        """The next token's distribution: its column's smoothed histogram."""
        return self._p[int(self._tile.column[self._i])]

    def push(self, token: int) -> None:
        """Move to the next token."""
        self._i += 1


def _train_counts(loaded, max_items: int) -> tuple[list[list[int]], int]:
    """Per-column code counts of up to ``max_items`` whole train-split items of the run's own data."""
    from ndvq.run.infer import _chunk, encode_whole

    model, cfg = loaded.model, loaded.config
    ds = build.build_dataset(cfg, "train", stats_dir=loaded.run_dir, pad_multiple=model.downsample)
    chunk = _chunk(cfg, ds, model)
    sizes = list(model.codebook_sizes)
    counts = [np.zeros(k, np.int64) for k in sizes]
    picks = sorted({int(i * len(ds) / min(len(ds), max_items)) for i in range(min(len(ds), max_items))})
    n = 0
    device = next(model.parameters()).device
    for i in picks:
        item = ds.try_item(i) if hasattr(ds, "try_item") else ds[i]
        if item is None:
            continue
        x = item["data"][None].to(device)
        grids = encode_whole(model, x, chunk) if chunk else encode_grids(model, x)
        col = 0
        for g in grids:  # [1, *L(, G)]
            cols = g.shape[-1] if g.ndim == model.n_dims + 2 else 1
            flat = g.reshape(-1, cols).cpu().numpy()  # [positions, G]
            for c in range(cols):
                counts[col + c] += np.bincount(flat[:, c], minlength=sizes[col + c])
            col += cols
        n += 1
    return [c.tolist() for c in counts], n


@torch.no_grad()
def histogram_for_run(loaded, fingerprint: str, max_items: int = 512) -> HistogramModel:
    """The run's :class:`HistogramModel`: read from ``RUN/code_histogram.json`` when it was computed for
    this ``fingerprint``, else computed from the train split and stored there.

    Args:
        loaded: the run's :class:`~ndvq.run.checkpoint.LoadedModel` (model, config, run_dir).
        fingerprint: the model's :func:`~ndvq.run.codesfile.codes_fingerprint`.
        max_items: most train items counted (spread evenly over the split). Default 512.
    """
    path = Path(loaded.run_dir) / HISTOGRAM_FILE
    sizes = [int(k) for k in loaded.model.codebook_sizes]
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
            if stored.get("fingerprint") == fingerprint and stored.get("codebook_sizes") == sizes:
                return HistogramModel(stored["counts"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable: recomputed below
    counts, n = _train_counts(loaded, max_items)
    record = {"fingerprint": fingerprint, "codebook_sizes": sizes, "counts": counts, "n_items": n, "split": "train"}
    atomic_write(path, lambda fh: fh.write(json.dumps(record).encode()))
    return HistogramModel(counts)
