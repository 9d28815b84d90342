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
        f"format version {VERSION + 1}": blob[:8] + struct.pack("<H", VERSION + 1) + blob[10:],
        "truncated": blob[:-3],
        "longer than its header says": blob + b"\0",
        "corrupted": blob[:30] + bytes([blob[30] ^ 0x10]) + blob[31:],
    }
    for expected, bad in cases.items():
        with pytest.raises(CodesError, match=expected) as e:
            unpack(bad, "'x.ndvq'")
        assert "'x.ndvq'" in str(e.value) and "\n" not in str(e.value)

    def file(version: int, head: bytes) -> bytes:  # a container around any header bytes, with a valid checksum
        body = MAGIC + struct.pack("<HIQ", version, len(head), 4 * len(words)) + head + words.astype("<u4").tobytes()
        return body + struct.pack("<I", zlib.crc32(body))

    def deflated(text: bytes) -> bytes:
        d = zlib.compressobj(9, zlib.DEFLATED, -15)
        return d.compress(text) + d.flush()

    assert unpack(file(1, b'{"a":1}'), "'x.ndvq'")[0] == {"a": 1}  # version 1 (plain JSON) is still read
    assert len(blob) < len(file(1, b'{"a":1,"padding":"' + b"x" * 200 + b'"}'))
    for head, expected in ((b"not deflate data \xff", "does not inflate"), (deflated(b"[1"), "not JSON"),
                           (deflated(b"[1]"), "not a JSON object")):
        with pytest.raises(CodesError, match=expected):
            unpack(file(VERSION, head), "'x.ndvq'")


def test_adaptive_histogram_round_trips_across_tiles_and_its_estimate_is_the_payload():
    """The adaptive histogram learns a file's distribution unlike the run's: it decodes with a fresh model
    (counts carried across tiles and columns), its ideal size is the payload's, and it beats the run's table."""
    import torch

    from ndvq.codec.coding import decode_tokens, encode_tokens, static_bits
    from ndvq.codec.histogram import AdaptiveHistogram, HistogramModel, adaptive_bits
    from ndvq.prior import TokenLayout

    rng = np.random.default_rng(0)
    lay = TokenLayout([(12, 10)], [(16, 8)], block=(5, 5))  # two columns, six tiles
    grid = torch.from_numpy(np.stack([rng.choice(16, (12, 10), p=np.r_[[0.5, 0.3], np.full(14, 0.2 / 14)]),
                                      rng.integers(6, 8, (12, 10))], axis=-1))  # [12, 10, 2]
    tokens = lay.flatten([grid])
    run = HistogramModel([[1] * 15 + [500], [300] + [1] * 7])  # the run saw other codes
    for strength in (1.0, 32.0):
        words = encode_tokens(lay, tokens, AdaptiveHistogram(run, strength))
        back = decode_tokens(lay, words, AdaptiveHistogram(run, strength))
        assert all(torch.equal(a, b) for a, b in zip(back, tokens))
        ideal = adaptive_bits(lay, tokens, run, strength)
        assert abs(32 * len(words) - ideal) <= 0.01 * ideal + 64
        assert ideal < 0.7 * static_bits(lay, tokens, run)
    with pytest.raises(ValueError, match="strength"):
        AdaptiveHistogram(run, 0.0)
