"""Probabilities -> integer frequency tables (the fixed-point rule), and ANS coding with ``constriction``.

The rule (:func:`frequencies`) is the one place a probability becomes an integer; encoder and decoder call
it on the same float64 inputs and so build identical tables. For ``n`` symbols and ``T = 2**PRECISION``:

1. ``p`` is made finite and non-negative (NaN, inf and negatives -> 0) and divided by its float64 sum
   (a uniform table when the sum is 0 or not finite);
2. every symbol gets ``1 + floor(p_i * (T - n))`` (so each symbol is codable, with frequency >= 1);
3. the remainder ``R = T - sum`` (``0 <= R``) is given out one by one, ``R // n`` to every symbol and then
   one more to the ``R % n`` symbols with the largest fractional parts ``p_i * (T - n) - floor(...)``,
   ties to the lower index (a stable sort). The table sums to exactly ``T``.

Every step is IEEE-754 float64 arithmetic (multiplication, floor, one sum in index order) and integer
arithmetic, so the same ``p`` gives the same table on every platform that numpy supports.

``constriction`` gets the table as the exact integer weights ``f_i - 1`` (float64, exactly representable);
its ``Categorical(perfect=False)`` quantizer gives symbol ``i`` the weight plus one slot per symbol at a
scale of exactly 1, i.e. our ``f_i`` (``tests/codec/test_entropy.py`` checks the code lengths against it).

Example:
    >>> import numpy as np
    >>> f = frequencies(np.array([0.5, 0.25, 0.25, 0.0]))
    >>> int(f.sum()) == 1 << PRECISION, int(f.min()) >= 1
    (True, True)
    >>> words = encode([(np.array([0, 1, 3], np.int32), f)])
    >>> Decoder(words).decode(f, 3).tolist()
    [0, 1, 3]
"""

from __future__ import annotations

import numpy as np

__all__ = ["PRECISION", "frequencies", "frequency_rows", "encode", "Decoder", "ideal_bits"]

PRECISION = 24
"""Bits of probability precision of constriction's ANS coder (its Python models use 24)."""

_TOTAL = 1 << PRECISION


def frequencies(p: np.ndarray) -> np.ndarray:
    """Integer frequencies ``int64 [n]`` (each >= 1, summing to ``2**PRECISION``) of probabilities ``p [n]``."""
    return frequency_rows(np.asarray(p, dtype=np.float64)[None])[0]


def frequency_rows(p: np.ndarray) -> np.ndarray:
    """:func:`frequencies` of every row of ``p [m, n]`` -> ``int64 [m, n]`` (the same rule, row by row)."""
    p = np.asarray(p, dtype=np.float64)
    m, n = p.shape
    if not 1 <= n <= _TOTAL // 2:
        raise ValueError(f"a table needs 1..{_TOTAL // 2} symbols, got {n}")
    p = np.where(np.isfinite(p) & (p > 0), p, 0.0)
    s = p.sum(axis=1, keepdims=True)  # [m, 1]
    ok = np.isfinite(s) & (s > 0)
    p = np.where(ok, p / np.where(ok, s, 1.0), 1.0 / n)
    scaled = p * float(_TOTAL - n)  # [m, n]
    base = np.floor(scaled)
    f = 1 + base.astype(np.int64)
    rest = _TOTAL - f.sum(axis=1)  # [m], >= 0
    f += (rest // n)[:, None]
    extra = rest % n  # [m]
    order = np.argsort(-(scaled - base), axis=1, kind="stable")  # largest fraction first, ties: lower index
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(n)[None].repeat(m, 0), axis=1)
    f += (rank < extra[:, None]).astype(np.int64)
    return f


def _weights(f: np.ndarray) -> np.ndarray:
    return (np.asarray(f, dtype=np.int64) - 1).astype(np.float64)


def _model(f: np.ndarray | None = None):
    import constriction

    if f is None:
        return constriction.stream.model.Categorical(perfect=False)  # a family: one table per symbol
    return constriction.stream.model.Categorical(_weights(f), perfect=False)


def encode(segments: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """ANS-code symbol segments in the order given; returns the compressed ``uint32`` words.

    Args:
        segments: ``(symbols [m], table)`` pairs, decoded later in the same order; ``table`` is one
            frequency table ``[n]`` for the whole segment or one per symbol ``[m, n]``.
    """
    import constriction

    coder = constriction.stream.stack.AnsCoder()
    for symbols, table in reversed(segments):  # a stack: the last segment is pushed first
        symbols = np.ascontiguousarray(symbols, dtype=np.int32)
        if not len(symbols):
            continue
        if table.ndim == 1:
            coder.encode_reverse(symbols, _model(table))
        else:
            coder.encode_reverse(symbols, _model(), _weights(table))
    return np.asarray(coder.get_compressed(), dtype=np.uint32)


class Decoder:
    """Decodes what :func:`encode` wrote, segment by segment, with the same tables.

    Args:
        words: the compressed ``uint32`` words.
    """

    def __init__(self, words: np.ndarray) -> None:
        import constriction

        self._coder = constriction.stream.stack.AnsCoder(np.ascontiguousarray(words, dtype=np.uint32))
        self._family = None
        self._models: dict[bytes, object] = {}

    def decode(self, table: np.ndarray, count: int = 1) -> np.ndarray:
        """``count`` symbols under one table ``[n]``, or one symbol per row of ``table [count, n]``."""
        if table.ndim == 1:
            key = table.tobytes()
            model = self._models.get(key)
            if model is None:
                model = self._models[key] = _model(table)
            return np.asarray(self._coder.decode(model, int(count)), dtype=np.int64)
        self._family = self._family or _model()
        return np.asarray(self._coder.decode(self._family, _weights(table)), dtype=np.int64)

    def is_empty(self) -> bool:
        """True when every word was consumed (a well-formed stream ends empty)."""
        return bool(self._coder.is_empty())


def ideal_bits(symbols: np.ndarray, table: np.ndarray) -> float:
    """``-sum log2(f[s] / 2**PRECISION)``: the code length of ``symbols`` under a table ``[n]`` or ``[m, n]``."""
    symbols = np.asarray(symbols, dtype=np.int64)
    f = table[symbols] if table.ndim == 1 else np.take_along_axis(table, symbols[:, None], 1)[:, 0]
    return float(-np.log2(f / _TOTAL).sum())
