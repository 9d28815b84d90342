"""Video folders (3D: time x height x width) decoded with PyAV.

Each video yields clips of ``sequence_length`` frames taken every ``frame_stride`` frames, clips
starting every ``clip_stride`` frames. Items are ``[C, T, H, W]`` floats in ``[-1, 1]``.

Indexing never decodes a video: the frame count comes from the stream metadata (``frames``, or
``duration x rate``; packets are counted, not decoded, when both are missing). The per-file facts
are cached in a JSON clip index under the cache directory, ``$NDVQ_CACHE/clip_index/<hash of
root>.json`` (never inside the data folder), keyed by the file's path and reused only while its
size and mtime are unchanged. A folder with a single video is split by time (val = its last
frames); with ``pad_multiple`` (eval / encode / decode) each video is one item, all its frames
(every ``frame_stride``-th) at its own size. Loading a clip seeks to the nearest key frame before
it and decodes only up to its last frame.

Example:
    >>> ds = VideoFolder("clips/", sequence_length=8, resolution=[64, 64])  # doctest: +SKIP
    >>> ds[0]["data"].shape                                                  # doctest: +SKIP
    torch.Size([3, 8, 64, 64])
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ndvq.data.common import (
    FileDataset,
    augment_nd,
    cache_dir,
    fit_and_crop,
    split_files,
    split_positions,
    warn_skip,
)
from ndvq.errors import DataError

__all__ = ["VideoFolder", "ClipIndex", "probe_video", "read_frames", "VIDEO_EXTENSIONS"]

VIDEO_EXTENSIONS = ("mp4", "mkv", "avi", "webm", "mov", "m4v")
_INDEX_NAME = ".ndvq_clip_index.json"
_INDEX_VERSION = 1


def probe_video(path: str | Path) -> dict:
    """``{"frames", "fps", "height", "width"}`` of the first video stream, from metadata only."""
    import av

    with av.open(str(path)) as c:
        if not c.streams.video:
            raise DataError("no video stream")
        s = c.streams.video[0]
        rate = s.average_rate or s.base_rate or s.guessed_rate
        fps = float(rate) if rate else 25.0
        n = int(s.frames or 0)
        if n <= 0:
            if s.duration is not None and s.time_base is not None:
                n = int(round(float(s.duration * s.time_base) * fps))
            elif c.duration:
                n = int(round(c.duration / 1e6 * fps))  # container duration is in microseconds
        if n <= 0:
            n = sum(1 for p in c.demux(s) if p.size)  # count packets, decode nothing
        h, w = s.codec_context.height, s.codec_context.width
    if n <= 0 or not h or not w:
        raise DataError(f"no frames found (frames={n}, size={w}x{h})")
    return {"frames": n, "fps": fps, "height": int(h), "width": int(w)}


def read_frames(path: str | Path, indices: Sequence[int], fps: float, gray: bool = False) -> np.ndarray:
    """Decode the frames at ``indices`` (sorted, 0-based) -> ``uint8 [T, H, W, C]``.

    Seeks to the key frame before ``indices[0]`` and decodes up to ``indices[-1]``. Frames past the
    end of a stream whose length was over-estimated repeat the last decoded frame.
    """
    import av

    wanted = sorted(set(int(i) for i in indices))
    first, last = wanted[0], wanted[-1]
    fmt = "gray" if gray else "rgb24"
    got: dict[int, np.ndarray] = {}
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        tb = float(s.time_base)
        t0 = s.start_time or 0
        for attempt in range(2):
            if first > 0 and attempt == 0:
                c.seek(int(first / fps / tb) + t0, stream=s, backward=True, any_frame=False)
            elif attempt == 1:
                c.seek(t0, stream=s, backward=True, any_frame=False)
            counter, started = None, False
            for frame in c.decode(s):
                if frame.pts is not None:
                    idx = int(round((frame.pts - t0) * tb * fps))
                else:
                    idx = first if counter is None else counter + 1
                counter = idx
                if not started and idx > first and attempt == 0:
                    break  # the seek landed past the clip start: decode from the beginning instead
                started = True
                if idx in wanted and idx not in got:
                    got[idx] = frame.to_ndarray(format=fmt)
                if idx >= last:
                    break
            if started:
                break
    if not got:
        raise DataError(f"could not decode frames {first}..{last}")
    out, prev = [], None
    for i in indices:
        prev = got.get(int(i), prev if prev is not None else got[min(got)])
        out.append(prev)
    arr = np.stack(out)
    return arr[..., None] if arr.ndim == 3 else arr


class ClipIndex:
    """A JSON cache of per-video facts (frames, fps, size) keyed by path, valid while size+mtime match.

    Args:
        location: the JSON file.

    ``hits`` / ``misses`` count lookups served from / missing in the cache since construction.
    """

    def __init__(self, location: Path):
        self.location = Path(location)
        self.hits = self.misses = 0
        self._dirty = False
        try:
            data = json.loads(self.location.read_text())
            self.entries = data["files"] if data.get("version") == _INDEX_VERSION else {}
        except (OSError, ValueError, KeyError, TypeError):
            self.entries = {}

    @staticmethod
    def for_root(root: Path) -> Path:
        """``$NDVQ_CACHE/clip_index/<hash of the resolved root>.json`` (the data folder is never written)."""
        root = Path(root).expanduser().resolve()
        digest = hashlib.sha1(str(root).encode()).hexdigest()[:16]
        return cache_dir() / "clip_index" / f"{digest}.json"

    def get(self, path: Path) -> dict:
        """The facts of ``path`` (probed, and stored, when missing or stale)."""
        st = path.stat()
        key = str(path.resolve())
        e = self.entries.get(key)
        if e and e.get("size") == st.st_size and e.get("mtime_ns") == st.st_mtime_ns:
            self.hits += 1
            return e
        self.misses += 1
        e = {**probe_video(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        self.entries[key] = e
        self._dirty = True
        return e

    def save(self) -> None:
        """Write the index (atomically) when it changed; an unwritable location is not an error."""
        if not self._dirty:
            return
        try:
            self.location.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.location.with_name(self.location.name + f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"version": _INDEX_VERSION, "files": self.entries}))
            os.replace(tmp, self.location)
            self._dirty = False
        except OSError:
            pass


class VideoFolder(FileDataset):
    """Clips from a folder of videos.

    Args:
        root: data folder (layouts in :mod:`ndvq.data.common`).
        split: ``"train" | "val" | "all"``. Default ``"train"``.
        val_dir, train_split, split_seed, subfolders: as for images. Defaults None, 0.9, 0, None.
        extensions: Default ``mp4 mkv avi webm mov m4v``.
        channels: 3 (RGB) or 1 (gray). Default None: 3.
        resolution: ``[H, W]`` (or ``[S]``) frames are brought to with ``crop``. Default None: as stored
            (all videos must then have the same size to be batched).
        crop: ``"center" | "random" | "resize" | "none"`` as for images. Default ``"center"``.
        sequence_length: frames per clip. Default 16.
        frame_stride: take every n-th frame. Default 1.
        clip_stride: frames between clip starts. Default None: ``sequence_length * frame_stride``
            (non-overlapping clips).
        augment: random horizontal flip of the whole clip (train split). Default False.
        pad_multiple: pad ``[T, H, W]`` at the end to a multiple of this (eval/encode). Default None.
        index_path: the clip-index JSON file. Default None: :meth:`ClipIndex.for_root`.

    A video shorter than one clip gives one clip whose missing frames repeat its last frame (its
    ``valid`` extent counts only the real ones).
    """

    modality, n_dims = "video", 3

    def __init__(self, root, split: str = "train", val_dir=None, train_split: float = 0.9, split_seed: int = 0,
                 subfolders: Sequence[str] | None = None, extensions: Sequence[str] | None = None,
                 channels: int | None = None, resolution: Sequence[int] | None = None, crop: str = "center",
                 sequence_length: int = 16, frame_stride: int = 1, clip_stride: int | None = None,
                 augment: bool = False, pad_multiple: Sequence[int] | None = None, index_path=None):
        super().__init__()
        if channels not in (None, 1, 3):
            raise DataError(f"video channels must be 1 (gray) or 3 (RGB), got {channels}")
        if crop not in ("center", "random", "resize", "none"):
            raise DataError(f"crop must be 'center', 'random', 'resize' or 'none', got {crop!r}")
        for name, v in (("sequence_length", sequence_length), ("frame_stride", frame_stride)):
            if int(v) < 1:
                raise DataError(f"{name} must be >= 1, got {v}")
        self.split, self.crop, self.channels = split, crop, channels or 3
        self.sequence_length, self.frame_stride = int(sequence_length), int(frame_stride)
        self.clip_stride = int(clip_stride or self.sequence_length * self.frame_stride)
        if self.clip_stride < 1:
            raise DataError(f"clip_stride must be >= 1, got {clip_stride}")
        res = None if resolution is None else [int(r) for r in resolution]
        self.resolution = None if res is None else tuple(res * 2 if len(res) == 1 else res)
        self.augment = bool(augment) and split == "train"
        self.pad_multiple = tuple(pad_multiple) if pad_multiple is not None else None
        self.whole = self.pad_multiple is not None
        if self.whole:
            self.resolution = None  # whole videos at their own size
        files, self.layout = split_files(root, split, extensions or VIDEO_EXTENSIONS, val_dir, train_split,
                                         split_seed, subfolders)
        self.index = ClipIndex(Path(index_path) if index_path else ClipIndex.for_root(root))
        self.meta: list[dict] = []
        self.clips: list[tuple[int, int, int]] = []  # (file number, start frame, frames in the item)
        for f in files:
            try:
                m = self.index.get(f)
            except Exception as e:  # noqa: BLE001 - an unreadable file is skipped, never fatal
                self.skipped.append((str(f), f"{type(e).__name__}: {e}"))
                warn_skip(f, e)
                continue
            if int(m.get("frames") or 0) < 1:
                self.skipped.append((str(f), "no frames"))
                warn_skip(f, "no frames")
                continue
            self.files.append(f)
            self.meta.append(m)
            self.clips += self._file_clips(len(self.files) - 1, int(m["frames"]), train_split)
        self.index.save()
        self._check_files(root)
        sizes = {(m["height"], m["width"]) for m in self.meta}
        if self.resolution is None and self.pad_multiple is None and len(sizes) > 1:
            raise DataError(f"videos in {str(root)!r} have different frame sizes {sorted(sizes)[:3]} and cannot be "
                             f"batched; set data.resolution=[H, W]")

    def _file_clips(self, k: int, n: int, train_split: float) -> list[tuple[int, int, int]]:
        """``(k, start frame, real frames)`` of a video of ``n`` frames (one item when ``whole``)."""
        lo, hi = split_positions(n, self.split, train_split) if self.single_file else (0, n)
        if self.whole:
            return [(k, lo, len(range(lo, hi, self.frame_stride)))]
        span = (self.sequence_length - 1) * self.frame_stride + 1
        starts = range(lo, lo + max(hi - lo - span, 0) + 1, self.clip_stride)
        return [(k, s, min(self.sequence_length, len(range(s, hi, self.frame_stride)))) for s in starts]

    def _hw(self, k: int) -> list[int]:
        m = self.meta[k]
        return list(self.resolution) if self.resolution and self.crop != "none" else [m["height"], m["width"]]

    def extent(self, i: int) -> tuple[list[int], list[int]]:
        k, _, n = self.clips[i]
        return [n, *self._hw(k)], [n if self.whole else self.sequence_length, *self._hw(k)]

    def __len__(self) -> int:
        return len(self.clips)

    def _path(self, i: int) -> Path:
        return self.files[self.clips[i][0]]

    def item_info(self, i: int) -> dict:
        """``{"path", "start_frame", "frame_stride", "item_shape": [T, H, W], "fps", "source_size"}``
        (``fps`` of the clip: source fps / stride; ``item_shape``: the clip before padding)."""
        k, start, _ = self.clips[i]
        m = self.meta[k]
        return {"path": str(self.files[k]), "start_frame": start, "frame_stride": self.frame_stride,
                "item_shape": self.extent(i)[0],
                "fps": m["fps"] / self.frame_stride, "source_size": [m["height"], m["width"]]}

    def _load(self, i: int) -> tuple[torch.Tensor, list[int]]:
        k, start, n = self.clips[i]
        idx = [start + j * self.frame_stride for j in range(n if self.whole else self.sequence_length)]
        frames = read_frames(self.files[k], idx, self.meta[k]["fps"], gray=self.channels == 1)
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1  # [T, H, W, C] -> [T, C, H, W]
        if self.resolution is not None:
            x = fit_and_crop(x, self.resolution, self.crop, random_=self.split == "train")
        x = x.permute(1, 0, 2, 3)  # [T, C, H, W] -> [C, T, H, W]
        if self.augment:
            x = augment_nd(x, 3, flip_axes=[2], max_rotate=0, max_scale=0, max_shift=0)
        return x.contiguous(), self.extent(i)[0]
