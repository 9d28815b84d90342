"""One item's tokens <-> the ANS payload, under a :class:`~ndvq.prior.TokenModel`, in the layout's order.

Tiles follow each other in one ANS stream; inside a tile the tokens are coded in the layout's order
(grid, column, raster). A static model (``model.static``: the histogram) gives one table per column, so
each run of tokens of one column is coded with that table in one call; any other model (the prior) is
asked token by token (``start`` / ``probabilities`` / ``push``), the encoder pushing the known tokens and
the decoder the tokens it has just decoded, so both see the same contexts and build the same tables
(:func:`ndvq.codec.entropy.frequencies`).

Example:
    >>> import torch
    >>> from ndvq.codec.histogram import HistogramModel
    >>> from ndvq.prior import TokenLayout
    >>> lay = TokenLayout([(4, 4)], [(8,)], block=(2, 2))
    >>> tokens = lay.flatten([torch.arange(16).reshape(4, 4) % 8])
    >>> words = encode_tokens(lay, tokens, HistogramModel([[1] * 8]))
    >>> all(torch.equal(a, b) for a, b in zip(decode_tokens(lay, words, HistogramModel([[1] * 8])), tokens))
    True
"""

from __future__ import annotations

import numpy as np
import torch

from ndvq.codec.entropy import Decoder, encode, frequencies, frequency_rows
from ndvq.errors import CodesError
from ndvq.prior.layout import Tile, TokenLayout

__all__ = ["encode_tokens", "decode_tokens", "runs"]


def runs(keys: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of the runs of equal values in ``keys [T]``."""
    if not len(keys):
        return []
    cut = np.flatnonzero(np.diff(keys)) + 1
    edges = [0, *cut.tolist(), len(keys)]
    return list(zip(edges[:-1], edges[1:]))


class _Tables:
    """Frequency tables of a static model, one per column, built once."""

    def __init__(self, model) -> None:
        self.model, self._cache = model, {}

    def __call__(self, column: int) -> np.ndarray:
        if column not in self._cache:
            self._cache[column] = frequencies(self.model.column_probabilities(column))
        return self._cache[column]


def _check_probabilities(p: np.ndarray, n: int, tile: Tile) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.shape != (n,):
        raise ValueError(f"the token model gave {p.shape} probabilities for a token of vocabulary {n}")
    return p


def _tile_segments(tile: Tile, seq: np.ndarray, model, tables: _Tables | None) -> list[tuple[np.ndarray, np.ndarray]]:
    if tables is not None:
        return [(seq[a:b], tables(int(tile.column[a]))) for a, b in runs(tile.column)]
    model.start(tile)
    rows = []
    for i, t in enumerate(seq.tolist()):
        rows.append(_check_probabilities(model.probabilities(), int(tile.vocab[i]), tile))
        model.push(int(t))
    return [(seq[a:b], frequency_rows(np.stack(rows[a:b]))) for a, b in runs(tile.vocab)]


def encode_tokens(layout: TokenLayout, tokens: list[torch.Tensor], model) -> np.ndarray:
    """Per-tile tokens (``layout.flatten(grids)``) -> the ANS words, under ``model`` (a TokenModel)."""
    tables = _Tables(model) if getattr(model, "static", False) else None
    segments = []
    for tile, seq in zip(layout.tiles, tokens):
        segments += _tile_segments(tile, seq.cpu().numpy().astype(np.int64), model, tables)
    return encode(segments)


def decode_tokens(layout: TokenLayout, words: np.ndarray, model) -> list[torch.Tensor]:
    """Inverse of :func:`encode_tokens`: the ANS words -> per-tile tokens (``layout.unflatten`` them)."""
    dec = Decoder(words)
    out = []
    static = getattr(model, "static", False)
    tables = _Tables(model) if static else None
    for tile in layout.tiles:
        if static:
            seq = np.concatenate([dec.decode(tables(int(tile.column[a])), b - a) for a, b in runs(tile.column)]
                                 or [np.zeros(0, np.int64)])
        else:
            model.start(tile)
            seq = np.zeros(tile.length, np.int64)
            for i in range(tile.length):
                p = _check_probabilities(model.probabilities(), int(tile.vocab[i]), tile)
                seq[i] = int(dec.decode(frequencies(p)[None])[0])
                model.push(int(seq[i]))
        out.append(torch.from_numpy(seq))
    if not dec.is_empty():
        raise CodesError("the payload holds more data than its tokens: it was coded with another probability model")
    return out
