"""Histogram probability models: per index column, code counts (the run's train split +1 each, or one file's own).

Three kinds:

* the **run histogram** (:class:`HistogramModel`, static): counts of the run's train-split codes, +1 each
  (every code stays cheap enough);
* the **file histogram** (:class:`HistogramModel`, static): the counts of one file's own codes (no
  smoothing), stored in that file's header (:func:`pack_counts`: LEB128 varints, base64); its payload is
  then the file's empirical entropy;
* the **adaptive histogram** (:class:`AdaptiveHistogram`): the run histogram as a prior worth ``strength``
  tokens, plus the counts of the file's codes coded so far; encoder and decoder update it alike, so it
  learns the file's own distribution without storing a table (:func:`adaptive_bits` estimates its size).

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

import base64
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from ndvq import build
from ndvq.prior.layout import Tile
from ndvq.run.codes import encode_grids
from ndvq.run.rundir import atomic_write

__all__ = ["HistogramModel", "AdaptiveHistogram", "adaptive_bits", "histogram_for_run", "HISTOGRAM_FILE",
           "pack_counts", "unpack_counts", "token_counts"]

HISTOGRAM_FILE = "code_histogram.json"


class HistogramModel:
    """A :class:`~ndvq.prior.TokenModel` whose next-token distribution depends only on the token's column.

    Args:
        counts: per column of the model's ``codebook_sizes``, the count of every code.
        smoothing: added to every count. Default 1 (the run histogram; a file's own histogram uses 0).
    """

    static = True
    """The distribution never depends on earlier tokens (the codec codes whole columns at once)."""

    def __init__(self, counts: list[list[int]], smoothing: int = 1) -> None:
        self.counts = [[int(c) for c in col] for col in counts]
        self._p = [(np.asarray(c, np.float64) + smoothing) / max(sum(c) + smoothing * len(c), 1) for c in self.counts]
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


class AdaptiveHistogram:
    """A :class:`~ndvq.prior.TokenModel` that learns one file's code distribution while coding it.

    The next token of column ``c`` has probability proportional to ``strength * p_run[c] + n[c]``: the run
    histogram's probabilities ``p_run`` weighted as ``strength`` earlier tokens, plus the counts ``n`` of
    the column's tokens coded so far in this file. Both terms are float64 sums of the same numbers in the
    same order on both sides, so encoder and decoder build identical tables (the fixed-point rule then
    normalises). Build a fresh one per file: it keeps its counts across tiles.

    Args:
        run: the run's :class:`HistogramModel` (the prior).
        strength: the prior's weight in tokens (> 0; large: the run histogram; small: the file's own counts).
    """

    static = False

    def __init__(self, run: HistogramModel, strength: float) -> None:
        if not strength > 0:
            raise ValueError(f"strength must be > 0, got {strength}")
        self.strength = float(strength)
        self._prior = [self.strength * np.asarray(run.column_probabilities(c), np.float64) for c in range(len(run.counts))]
        self._counts = [np.zeros_like(p) for p in self._prior]
        self._tile: Tile | None = None
        self._i = 0

    def start(self, tile: Tile) -> None:
        """Begin a tile (the counts carry over from earlier tiles)."""
        self._tile, self._i = tile, 0

    def probabilities(self) -> np.ndarray:
        """The next token's (unnormalised) distribution: prior plus counts so far of its column."""
        c = int(self._tile.column[self._i])
        return self._prior[c] + self._counts[c]

    def push(self, token: int) -> None:
        """Count the token just coded and move to the next."""
        self._counts[int(self._tile.column[self._i])][int(token)] += 1.0
        self._i += 1


def adaptive_bits(layout, tokens: list[torch.Tensor], run: HistogramModel, strength: float) -> float:
    """The ideal code length in bits of one item's per-tile ``tokens`` under :class:`AdaptiveHistogram`
    (vectorised: each token's probability from how often its code came before it in its column)."""
    per_column: dict[int, list[np.ndarray]] = {}
    for tile, seq in zip(layout.tiles, tokens):
        seq = seq.cpu().numpy().astype(np.int64)
        for c in np.unique(tile.column):
            per_column.setdefault(int(c), []).append(seq[tile.column == c])  # coding order within the column
    bits = 0.0
    for c, parts in per_column.items():
        s = np.concatenate(parts)
        order = np.argsort(s, kind="stable")
        first = np.searchsorted(s[order], s[order], side="left")
        before = np.empty_like(s)
        before[order] = np.arange(len(s)) - first  # earlier tokens with the same code
        p_run = np.asarray(run.column_probabilities(c), np.float64)
        p = (strength * p_run[s] + before) / (strength + np.arange(len(s)))
        bits += float(-np.log2(p).sum())
    return bits


def token_counts(layout, tokens: list[torch.Tensor]) -> list[list[int]]:
    """Per column of ``layout``, the counts of each code in one item's per-tile ``tokens``."""
    sizes = [k for cols in layout.columns for k in cols]
    counts = [np.zeros(k, np.int64) for k in sizes]
    for tile, seq in zip(layout.tiles, tokens):
        seq = seq.cpu().numpy()
        for c in np.unique(tile.column):
            counts[c] += np.bincount(seq[tile.column == c], minlength=sizes[c])
    return [c.tolist() for c in counts]


def pack_counts(counts: list[list[int]]) -> str:
    """Counts as text for a header: every count a LEB128 varint, all columns in order, base64."""
    out = bytearray()
    for col in counts:
        for v in col:
            v = int(v)
            while True:
                out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
                v >>= 7
                if not v:
                    break
    return base64.b64encode(bytes(out)).decode("ascii")


def unpack_counts(text: str, sizes: list[int]) -> list[list[int]]:
    """Inverse of :func:`pack_counts` for columns of ``sizes`` codes; ValueError when it does not fit."""
    data, values, v, shift = base64.b64decode(text.encode("ascii"), validate=True), [], 0, 0
    for b in data:
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            values.append(v)
            v, shift = 0, 0
        elif shift > 63:
            raise ValueError("a count longer than 64 bits")
    if shift or len(values) != sum(sizes):
        raise ValueError(f"{len(values)} counts for columns of {sizes} codes")
    edges = np.cumsum([0, *sizes]).tolist()
    return [values[a:b] for a, b in zip(edges[:-1], edges[1:])]


def _train_counts(loaded, max_items: int) -> tuple[list[list[int]], int]:
    """Per-column code counts of up to ``max_items`` whole train-split items of the run's own data."""
    from ndvq.run.infer import encode_whole, piece_length

    model, cfg = loaded.model, loaded.config
    ds = build.build_dataset(cfg, "train", stats_dir=loaded.run_dir, pad_multiple=model.downsample)
    chunk = piece_length(cfg, ds, model)
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
