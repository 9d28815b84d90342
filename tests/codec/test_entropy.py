"""The fixed-point frequency rule, constriction coding exactly the tables we build, and the container format."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from ndvq.codec.entropy import PRECISION, Decoder, encode, frequencies, frequency_rows, ideal_bits
from ndvq.codec.format import MAGIC, VERSION, pack, unpack
from ndvq.errors import CodesError

T = 1 << PRECISION


@pytest.mark.parametrize("n", [1, 2, 7, 512, 65536])
def test_tables_are_exact_positive_and_deterministic(n):
    rng = np.random.default_rng(n)
    p = rng.dirichlet(np.full(n, 0.05))
    if n > 1:
        p[rng.integers(0, n, size=n // 4 + 1)] = 0.0  # zero-probability symbols stay codable
    f = frequencies(p)
    assert f.dtype == np.int64 and f.sum() == T and f.min() >= 1
    assert np.array_equal(f, frequencies(p.copy()))
    # close to the probabilities: within one slot of the scaled value (after the +1 floor)
    q = p / p.sum()
    assert np.all(np.abs(f - 1 - q * (T - n)) < 2)


def test_remainder_goes_to_largest_fractions_ties_to_lower_index():
    f = frequencies(np.full(3, 1 / 3))  # (T - 3) / 3 is whole: no remainder beyond the +1s
    assert f.tolist() == [T // 3 + (1 if T % 3 > 0 else 0), T // 3 + (1 if T % 3 > 1 else 0), T // 3]
    assert frequencies(np.array([0.0, 0.0])).tolist() == [T // 2, T // 2]  # all zero -> uniform
    assert frequencies(np.array([np.nan, 1.0])).tolist() == [1, T - 1]  # NaN -> 0 -> the floor of 1
    rows = frequency_rows(np.array([[0.2, 0.8], [0.5, 0.5]]))
    assert rows.tolist() == [frequencies(np.array([0.2, 0.8])).tolist(), frequencies(np.array([0.5, 0.5])).tolist()]


def test_constriction_codes_with_exactly_our_table():
    """A symbol of frequency f costs 24 - log2(f) bits: with frequencies 1 and 2 side by side, any other
    table (constriction's own rounding) would be off by a whole bit per symbol."""
    f = np.array([2, 1, 3, T - 6 - 100, 100], np.int64)
    assert f.sum() == T
    rng = np.random.default_rng(0)
    symbols = rng.choice([0, 1, 2, 4], size=4000).astype(np.int32)
    words = encode([(symbols, f)])
    assert abs(32 * len(words) - ideal_bits(symbols, f)) <= 64
    assert np.array_equal(Decoder(words).decode(f, len(symbols)), symbols)


def test_segments_with_per_symbol_tables_round_trip():
    rng = np.random.default_rng(1)
    segs = []
    for n, m in ((5, 30), (300, 20), (2, 50)):
        rows = frequency_rows(rng.dirichlet(np.ones(n), size=m))
        segs.append((rng.integers(0, n, m).astype(np.int32), rows))
        segs.append((rng.integers(0, n, m).astype(np.int32), rows[0]))
    dec = Decoder(encode(segs))
    for symbols, table in segs:
        got = dec.decode(table, len(symbols)) if table.ndim == 1 else np.concatenate(
            [dec.decode(table[i:i + 1]) for i in range(len(symbols))])
        assert np.array_equal(got, symbols)
    assert dec.is_empty()


def test_container_round_trip_and_each_failure():
    words = np.arange(5, dtype=np.uint32)
    blob = pack({"a": 1}, words)
    assert blob[:8] == MAGIC
    header, got = unpack(blob, "'x.ndvq'")
    assert header == {"a": 1} and np.array_equal(got, words)
    cases = {
        "not an .ndvq file": b"\x89PNG\r\n\x1a\n" + blob[8:],
        "format version 2": blob[:8] + struct.pack("<H", VERSION + 1) + blob[10:],
        "truncated": blob[:-3],
        "longer than its header says": blob + b"\0",
        "corrupted": blob[:30] + bytes([blob[30] ^ 0x10]) + blob[31:],
    }
    for expected, bad in cases.items():
        with pytest.raises(CodesError, match=expected) as e:
            unpack(bad, "'x.ndvq'")
        assert "'x.ndvq'" in str(e.value) and "\n" not in str(e.value)
    body = pack({"a": 1}, words)[:-4]
    body = body[:22] + b"[" + body[23:]  # a header that is not JSON, with a valid checksum
    with pytest.raises(CodesError, match="not JSON"):
        unpack(body + struct.pack("<I", zlib.crc32(body)), "'x.ndvq'")
