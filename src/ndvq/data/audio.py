"""Audio folders (1D): WAV, FLAC, OGG (and anything else libsndfile reads) via soundfile.

Each file is cut into windows of ``segment_length`` samples (at the target ``sample_rate``)
every ``hop_length`` samples. Items are ``[C, segment_length]`` floats in ``[-1, 1]``; the part of a
window past the end of its file is zero padding, and the item's ``valid`` extent says where it starts.
With ``pad_multiple`` (eval / encode / decode) every file is one item, normalised as a whole, and
``item_info`` records the gain, source rate and length that ``write_item`` uses to undo it.
Indexing reads only the file headers; a window is read (with a small margin), resampled with
soxr when the file's rate differs, and normalised on its own:

* ``"peak"``: divided by its peak (silent windows, peak < 1e-4, are left alone);
* ``"rms"``: scaled to an RMS of 0.1 (-20 dBFS) and clipped to ``[-1, 1]``;
* ``"none"``: as stored (soundfile gives ``[-1, 1]``).

Example:
    >>> ds = AudioFolder("wavs/", sample_rate=16000, segment_length=16384)  # doctest: +SKIP
    >>> ds[0]["data"].shape                                                  # doctest: +SKIP
    torch.Size([1, 16384])
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ndvq.data.common import (
    PADDING_WARN_SHARE,
    FileDataset,
    fitting_window,
    majority,
    split_files,
    split_positions,
    warn_skip,
    window_starts,
)
from ndvq.errors import DataError

__all__ = ["AudioFolder", "read_window", "AUDIO_EXTENSIONS"]

AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "aiff", "aif", "mp3")
_MARGIN = 256  # source samples read either side of a window so the resampler has context
_RMS_TARGET = 0.1


def read_window(path: str | Path, start: int, length: int, source_rate: int, target_rate: int,
                source_frames: int) -> np.ndarray:
    """Samples ``[start, start + length)`` at ``target_rate`` of ``path`` -> ``float32 [length, C]``
    (zero-padded past the end of the file)."""
    import soundfile as sf

    if source_rate == target_rate:
        a = sf.read(str(path), start=start, frames=min(length, max(source_frames - start, 0)),
                    dtype="float32", always_2d=True)[0]
    else:
        import soxr

        ratio = source_rate / target_rate
        s0 = int(math.floor(start * ratio))
        lo = max(s0 - _MARGIN, 0)
        n_src = int(math.ceil(length * ratio)) + 2 * _MARGIN
        raw = sf.read(str(path), start=lo, frames=min(n_src + (s0 - lo), max(source_frames - lo, 0)),
                      dtype="float32", always_2d=True)[0]
        res = soxr.resample(raw, source_rate, target_rate, quality="HQ") if len(raw) else raw
        offset = int(round((s0 - lo) / ratio))
        a = np.asarray(res[offset: offset + length], dtype=np.float32)
    if len(a) < length:
        a = np.concatenate([a, np.zeros((length - len(a), a.shape[1]), np.float32)])
    return a


class AudioFolder(FileDataset):
    """Fixed-length windows from a folder of audio files (whole files with ``pad_multiple``).

    Args:
        root: data folder (layouts in :mod:`ndvq.data.common`).
        split: ``"train" | "val" | "all"``. Default ``"train"``.
        val_dir, train_split, split_seed, subfolders: as for images. Defaults None, 0.9, 0, None.
        extensions: Default ``wav flac ogg aiff aif mp3``.
        sample_rate: target rate; files at other rates are resampled (soxr, HQ) and the start summary
            says so. Default None: the files' own rate when they share one, else the most common.
        mono: average the channels to one. Default True.
        channels: with ``mono=False``, the channel count. Default None: the majority of the files
            (files with another count are skipped with a warning).
        segment_length: samples per window. Default 16384.
        hop_length: samples between window starts. Default None: ``segment_length``.
        normalize: ``"peak" | "rms" | "none"`` per window (per file with ``pad_multiple``). Default ``"peak"``.
        pad_multiple: whole files, padded at the end (the last sample repeated) to a multiple of this
            (eval / encode). Default None.

    A file shorter than one window gives one zero-padded window (its ``valid`` extent says how much
    is real). A single file is split by time (val = its last part).
    """

    modality, n_dims = "audio", 1

    def __init__(self, root, split: str = "train", val_dir=None, train_split: float = 0.9, split_seed: int = 0,
                 subfolders: Sequence[str] | None = None, extensions: Sequence[str] | None = None,
                 sample_rate: int | None = None, mono: bool = True, channels: int | None = None,
                 segment_length: int = 16384, hop_length: int | None = None, normalize: str = "peak",
                 pad_multiple: Sequence[int] | None = None):
        super().__init__()
        if normalize not in ("peak", "rms", "none"):
            raise DataError(f"normalize must be 'peak', 'rms' or 'none', got {normalize!r}")
        if int(segment_length) < 1:
            raise DataError(f"segment_length must be >= 1, got {segment_length}")
        self.split, self.normalize, self.mono = split, normalize, bool(mono)
        self.segment_length = int(segment_length)
        self.hop_length = int(hop_length or segment_length)
        self.pad_multiple = tuple(pad_multiple) if pad_multiple is not None else None
        self.whole = self.pad_multiple is not None
        files, self.layout = split_files(root, split, extensions or AUDIO_EXTENSIONS, val_dir, train_split,
                                         split_seed, subfolders)
        self.meta: list[dict] = []
        for f, m in self._headers(files):
            self.files.append(f)
            self.meta.append(m)
        self._check_files(root)
        # the folder's other files (those of the other split) vote on the rate and channel count too, so every
        # split runs at what training does
        votes_needed = split != "all" and (not sample_rate or not (self.mono or channels))
        others = [] if not votes_needed else self._quiet_headers(
            split_files(root, "all", extensions or AUDIO_EXTENSIONS, val_dir, train_split, split_seed, subfolders)[0])
        if self.mono:
            self.channels = 1
        else:  # the folder's majority channel count (or data.channels); files of another count are skipped
            self.meta = self._keep_channel_count(self.meta, channels, others)
            self.channels = self.channels or 1  # 0: no file anywhere (the folder's check has named that)
        rates = Counter(m["rate"] for m in self.meta)
        tie = False
        if sample_rate:
            self.sample_rate = int(sample_rate)
        else:
            votes = rates + Counter(m["rate"] for m in others if self.mono or m["channels"] == self.channels)
            self.sample_rate, tie = majority(votes)
        moved = {r: n for r, n in rates.items() if r != self.sample_rate}
        if moved:
            self.note(", ".join(f"{n} file(s) at {r} Hz" for r, n in sorted(moved.items()))
                      + f" resampled to {self.sample_rate} Hz"
                      + ("" if sample_rate else " (the highest of the folder's most common rates)" if tie
                         else " (the folder's most common rate)"),
                      warn=not sample_rate)
        self.windows: list[tuple[int, int, int]] = []  # (file number, start, real samples) at the target rate
        for k, m in enumerate(self.meta):
            m["length"] = int(math.floor(m["frames"] * self.sample_rate / m["rate"]))
            self.windows += self._file_windows(k, m["length"], train_split)
        short = sum(m["length"] < self.segment_length for m in self.meta)
        if short and not self.whole:
            lengths = [m["length"] for m in self.meta]
            fit = fitting_window(lengths, self.segment_length, self.hop_length)
            # no suggestion when the window in effect already keeps the padding within it, nor for the val split
            # (the window is the train split's to choose: a smaller one fitted to short val files costs training)
            smaller = fit < self.segment_length and split != "val"
            self.suggested_fix = f"data.segment_length={fit}" if smaller else None
            which = "" if split == "all" else f" {split}"
            self.note(f"{short} of {len(self.meta)}{which} file(s) are shorter than data.segment_length="
                      f"{self.segment_length} samples at {self.sample_rate} Hz and are zero-padded"
                      + (f"; data.segment_length={fit} keeps the padding within {PADDING_WARN_SHARE:.0%} of a window"
                         if smaller else ""),
                      warn=short * 2 > len(self.meta))

    def pinned_options(self) -> dict:
        """The channel count and the sample rate (a model trained at one rate reads other files resampled
        to it; ``decode`` writes them back at their own)."""
        return {**super().pinned_options(), **({"sample_rate": self.sample_rate} if self.sample_rate else {})}

    def _headers(self, files):
        import soundfile as sf

        for f in files:
            try:
                info = sf.info(str(f))
                if info.frames <= 0 or info.samplerate <= 0:
                    raise DataError(f"no samples (frames={info.frames}, rate={info.samplerate})")
            except Exception as e:  # noqa: BLE001 - an unreadable file is skipped, never fatal
                self.skipped.append((str(f), f"{type(e).__name__}: {e}"))
                warn_skip(f, e)
                continue
            yield f, {"frames": int(info.frames), "rate": int(info.samplerate), "channels": int(info.channels),
                      "subtype": str(info.subtype)}

    def _quiet_headers(self, everything: list[Path]) -> list[dict]:
        """Headers of the files in ``everything`` that are not this split's, read quietly (an unreadable one
        is named by its own split)."""
        import soundfile as sf

        mine = {str(f) for f in self.files} | {path for path, _ in self.skipped}
        out = []
        for f in everything:
            if str(f) not in mine:
                try:
                    info = sf.info(str(f))
                except Exception:  # noqa: BLE001, S112 - the file's own split names it
                    continue
                out.append({"rate": int(info.samplerate), "channels": int(info.channels)})
        return out

    def _file_windows(self, k: int, n: int, train_split: float) -> list[tuple[int, int, int]]:
        """Windows ``(k, start, real length)`` of a file of ``n`` samples (one whole-file item when ``whole``)."""
        lo, hi = split_positions(n, self.split, train_split) if self.single_file else (0, n)
        if self.whole:
            return [(k, lo, hi - lo)]
        return [(k, s, min(self.segment_length, hi - s))
                for s in window_starts(lo, hi, self.segment_length, self.hop_length)]

    def __len__(self) -> int:
        return len(self.windows)

    def _path(self, i: int) -> Path:
        return self.files[self.windows[i][0]]

    def extent(self, i: int) -> tuple[list[int], list[int]]:
        _, _, n = self.windows[i]
        return [n], [n if self.whole else self.segment_length]

    def item_info(self, i: int) -> dict:
        """``{"path", "sample_rate", "start", "item_shape", "source_rate", "frames"}`` (``start``: first
        sample at ``sample_rate``; ``item_shape``: the real samples of the item; ``frames``: the file's
        length at ``source_rate``); whole files add ``"gain"`` (the normalisation factor, undone by
        ``write_item``)."""
        k, start, n = self.windows[i]
        m = self.meta[k]
        info = {"path": str(self.files[k]), "sample_rate": self.sample_rate, "start": start, "item_shape": [n],
                "source_rate": m["rate"], "frames": m["frames"]}
        if self.whole:
            info.update(gain=self._gain(self._read(k, start, n)), subtype=m["subtype"])
            if start or n != m["length"]:  # a part of the file (single-file split): its own source frames
                info["frames"] = int(round(n * m["rate"] / self.sample_rate))
        return info

    def _read(self, k: int, start: int, n: int) -> torch.Tensor:
        m = self.meta[k]
        a = read_window(self.files[k], start, n, m["rate"], self.sample_rate, m["frames"])
        if not np.isfinite(a).all():
            raise DataError("audio contains NaN or infinite samples")
        if self.mono:
            a = a.mean(axis=1, keepdims=True)
        else:
            a = a[:, : self.channels]
        return torch.from_numpy(np.ascontiguousarray(a.T))  # [T, C] -> [C, T]

    def _gain(self, x: torch.Tensor) -> float:
        """The factor ``normalize`` multiplies ``x`` by (1.0 for silence or ``"none"``)."""
        if self.normalize == "peak":
            peak = float(x.abs().max())
            return 1.0 / peak if peak > 1e-4 else 1.0
        if self.normalize == "rms":
            rms = float(x.pow(2).mean().sqrt())
            return _RMS_TARGET / rms if rms > 1e-5 else 1.0
        return 1.0

    def _load(self, i: int) -> tuple[torch.Tensor, list[int]]:
        k, start, n = self.windows[i]
        x = self._read(k, start, n if self.whole else self.segment_length)
        return (x * self._gain(x[:, :n])).clamp(-1, 1), [n]
