"""The ``.ndvq`` container: magic, format version, a deflated JSON header, the ANS payload and a CRC-32.

Byte layout (integers little-endian)::

    offset  size  field
    0       8     magic  b"\\x89NDVQ\\r\\n\\x1a"  (PNG-style: catches text-mode transfers and non-.ndvq files)
    8       2     format version (uint16; this module writes VERSION and reads READS)
    10      4     header length H in bytes (uint32)
    14      8     payload length P in bytes (uint64; a multiple of 4)
    22      H     header: a UTF-8 JSON object (never pickle), raw DEFLATE-compressed (zlib, wbits=-15);
                  version 1 files (still read) hold the JSON uncompressed
    22+H    P     payload: constriction's ANS words (uint32)
    22+H+P  4     CRC-32 (zlib) of every byte before it

Reading checks, in this order, each failure one :class:`~ndvq.errors.CodesError` naming the file: the magic
(not an .ndvq file), the version (unknown format version), the total length (truncated, or data after
the end), the CRC (corrupted), the header (a deflated JSON object). The header's meaning (fingerprints, shapes,
layout) is checked by :mod:`ndvq.codec.files` against the model.

Example:
    >>> import numpy as np
    >>> blob = pack({"modality": "image"}, np.array([1, 2], np.uint32))
    >>> header, words = unpack(blob, "x.ndvq")
    >>> header["modality"], words.tolist()
    ('image', [1, 2])
"""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np

from ndvq.errors import CodesError

__all__ = ["MAGIC", "VERSION", "READS", "SUFFIX", "header_bytes", "pack", "unpack"]

MAGIC = b"\x89NDVQ\r\n\x1a"
VERSION = 2
READS = (1, 2)
"""Format versions this module reads: 1 (uncompressed JSON header) and 2 (deflated)."""
SUFFIX = ".ndvq"
_FIXED = struct.Struct("<8sHIQ")  # magic, version, header length, payload length
_CRC = struct.Struct("<I")


def header_bytes(header: dict) -> bytes:
    """The stored form of a header: its compact, key-sorted JSON, raw-DEFLATE compressed."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw DEFLATE: no zlib header, the file has a CRC
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return deflate.compress(text) + deflate.flush()


def pack(header: dict, words: np.ndarray) -> bytes:
    """The bytes of one ``.ndvq`` file: ``header`` (JSON-able) and the payload ``words`` (uint32)."""
    head = header_bytes(header)
    payload = np.ascontiguousarray(words, dtype="<u4").tobytes()
    body = _FIXED.pack(MAGIC, VERSION, len(head), len(payload)) + head + payload
    return body + _CRC.pack(zlib.crc32(body))


def unpack(blob: bytes, where: str) -> tuple[dict, np.ndarray]:
    """``(header, words)`` of the bytes of one ``.ndvq`` file; ``where`` names it in errors.

    Raises:
        CodesError: not an .ndvq file, an unknown version, truncated, corrupted or a bad header.
    """
    if len(blob) < len(MAGIC) or blob[:len(MAGIC)] != MAGIC:
        raise CodesError(f"{where} is not an .ndvq file (no .ndvq magic bytes at its start; write one with "
                         "ndvq compress)")
    if len(blob) < _FIXED.size:
        raise CodesError(f"{where} is truncated: {len(blob)} bytes, shorter than the {_FIXED.size}-byte fixed header")
    _, version, n_head, n_payload = _FIXED.unpack_from(blob)
    if version not in READS:
        raise CodesError(f"{where} has .ndvq format version {version}, this ndvq reads versions "
                         f"{', '.join(map(str, READS))} (written by a newer ndvq release?)")
    want = _FIXED.size + n_head + n_payload + _CRC.size
    if len(blob) != want:
        what = "truncated" if len(blob) < want else "longer than its header says (data after the end)"
        raise CodesError(f"{where} is {what}: {len(blob)} bytes, its header says {want}")
    (crc,) = _CRC.unpack_from(blob, want - _CRC.size)
    if zlib.crc32(blob[:want - _CRC.size]) != crc:
        raise CodesError(f"{where} is corrupted: its CRC-32 checksum does not match its contents")
    if n_payload % 4:
        raise CodesError(f"{where}: payload of {n_payload} bytes is not whole 32-bit words")
    head = blob[_FIXED.size:_FIXED.size + n_head]
    try:
        text = head if version == 1 else zlib.decompressobj(-15).decompress(head)
        header = json.loads(text.decode("utf-8"))
    except zlib.error as e:
        raise CodesError(f"{where}: its header does not inflate: {e}") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise CodesError(f"{where}: its header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise CodesError(f"{where}: its header is not a JSON object")
    words = np.frombuffer(blob, dtype="<u4", count=n_payload // 4, offset=_FIXED.size + n_head).astype(np.uint32)
    return header, words
