"""Audio folders (1D): WAV, FLAC, OGG (and anything else libsndfile reads) via soundfile.

Each file is cut into windows of ``segment_length`` samples (at the target ``sample_rate``)
every ``hop_length`` samples. Items are ``[C, segment_length]`` floats in ``[-1, 1]``.
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
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ndvq.data.common import FileDataset, pad_to_multiple, split_files, warn_skip
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
    """Fixed-length windows from a folder of audio files.

    Args:
        root: data folder (layouts in :mod:`ndvq.data.common`).
        split: ``"train" | "val" | "all"``. Default ``"train"``.
        val_dir, train_split, split_seed, subfolders: as for images. Defaults None, 0.9, 0, None.
        extensions: Default ``wav flac ogg aiff aif mp3``.
        sample_rate: target rate; files at other rates are resampled (soxr, HQ). Default None: the
            rate of the first file.
        mono: average the channels to one. Default True.
        channels: with ``mono=False``, the channel count (files with fewer channels repeat their
            first, files with more keep the first ones). Default None: the first file's.
        segment_length: samples per window. Default 16384.
        hop_length: samples between window starts. Default None: ``segment_length``.
        normalize: ``"peak" | "rms" | "none"`` per window. Default ``"peak"``.
        pad_multiple: pad windows to a multiple of this (eval/encode). Default None.

    A file shorter than one window gives one zero-padded window; with ``pad_multiple`` set
    (eval/encode) the trailing partial window of every file is kept (zero-padded) so the whole
    file is covered.
    """

    modality, n_dims = "audio", 1

    def __init__(self, root, split: str = "train", val_dir=None, train_split: float = 0.9, split_seed: int = 0,
                 subfolders: Sequence[str] | None = None, extensions: Sequence[str] | None = None,
                 sample_rate: int | None = None, mono: bool = True, channels: int | None = None,
                 segment_length: int = 16384, hop_length: int | None = None, normalize: str = "peak",
                 pad_multiple: Sequence[int] | None = None):
        super().__init__()
        import soundfile as sf

        if normalize not in ("peak", "rms", "none"):
            raise DataError(f"normalize must be 'peak', 'rms' or 'none', got {normalize!r}")
        if int(segment_length) < 1:
            raise DataError(f"segment_length must be >= 1, got {segment_length}")
        self.split, self.normalize, self.mono = split, normalize, bool(mono)
        self.segment_length = int(segment_length)
        self.hop_length = int(hop_length or segment_length)
        self.pad_multiple = tuple(pad_multiple) if pad_multiple is not None else None
        files, self.layout = split_files(root, split, extensions or AUDIO_EXTENSIONS, val_dir, train_split,
                                         split_seed, subfolders)
        self.meta: list[dict] = []
        self.windows: list[tuple[int, int]] = []  # (file number, start sample at the target rate)
        self.sample_rate = int(sample_rate) if sample_rate else None
        for f in files:
            try:
                info = sf.info(str(f))
                if info.frames <= 0 or info.samplerate <= 0:
                    raise DataError(f"no samples (frames={info.frames}, rate={info.samplerate})")
            except Exception as e:  # noqa: BLE001 - an unreadable file is skipped, never fatal
                self.skipped.append((str(f), f"{type(e).__name__}: {e}"))
                warn_skip(f, e)
                continue
            self.sample_rate = self.sample_rate or int(info.samplerate)
            k = len(self.files)
            self.files.append(f)
            self.meta.append({"frames": int(info.frames), "rate": int(info.samplerate), "channels": int(info.channels)})
            n = int(math.floor(info.frames * self.sample_rate / info.samplerate))
            last = max(n - self.segment_length, 0)
            starts = list(range(0, last + 1, self.hop_length))
            if self.pad_multiple is not None and n > starts[-1] + self.segment_length:
                starts.append(starts[-1] + self.hop_length)  # cover the tail (zero-padded)
            self.windows += [(k, s) for s in starts]
        self._check_files(root)
        self.channels = 1 if self.mono else int(channels or self.meta[0]["channels"])

    def __len__(self) -> int:
        return len(self.windows)

    def _path(self, i: int) -> Path:
        return self.files[self.windows[i][0]]

    def item_info(self, i: int) -> dict:
        """``{"path", "sample_rate", "start", "item_shape", "source_rate"}`` (``start``: first sample at
        ``sample_rate``; ``item_shape``: ``[segment_length]``, the item before padding)."""
        k, start = self.windows[i]
        return {"path": str(self.files[k]), "sample_rate": self.sample_rate, "start": start,
                "item_shape": [self.segment_length],
                "source_rate": self.meta[k]["rate"]}

    def _load(self, i: int) -> torch.Tensor:
        k, start = self.windows[i]
        m = self.meta[k]
        a = read_window(self.files[k], start, self.segment_length, m["rate"], self.sample_rate, m["frames"])
        if not np.isfinite(a).all():
            raise DataError("audio contains NaN or infinite samples")
        if self.mono:
            a = a.mean(axis=1, keepdims=True)
        elif a.shape[1] < self.channels:
            a = np.concatenate([a, np.repeat(a[:, :1], self.channels - a.shape[1], axis=1)], axis=1)
        else:
            a = a[:, : self.channels]
        x = torch.from_numpy(np.ascontiguousarray(a.T))  # [T, C] -> [C, T]
        if self.normalize == "peak":
            peak = float(x.abs().max())
            if peak > 1e-4:
                x = x / peak
        elif self.normalize == "rms":
            rms = float(x.pow(2).mean().sqrt())
            if rms > 1e-5:
                x = x * (_RMS_TARGET / rms)
        return pad_to_multiple(x.clamp(-1, 1), self.pad_multiple, value=0.0)
