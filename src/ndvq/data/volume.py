"""Volumes (3D): NIfTI (``.nii``, ``.nii.gz``) via nibabel, and NPY.

Items are ``[C, X, Y, Z]`` floats in ``[-1, 1]`` (NIfTI array order; a 4-D NIfTI ``[X, Y, Z, C]`` has
``C`` channels, a 4-D NPY is ``[C, D, H, W]``). Per volume, an intensity map is fitted once on the
whole volume and applied linearly, ``normalised = raw * scale + offset`` (then clipped to ``[-1, 1]``):

* ``"percentile"``: the ``percentiles`` (default 0.5, 99.5) of the volume go to -1 and 1;
* ``"ct"``: the ``ct_window`` (default -1000..1000 HU) goes to -1..1;
* ``"zscore"``: z-score with mean/std of the foreground (voxels above the volume's minimum),
  divided by 5 (so +-5 sigma spans ``[-1, 1]``);
* ``"none"``: values as stored (not clipped).

The map is in ``item_info(i)["value_map"]`` and ``write_item`` undoes it, so decoded NIfTI files
carry the original intensities and the original affine.

Splits: the train split gives ``patches_per_item`` random patches of ``patch_size`` per volume per
epoch; the val split gives one centre patch per volume when ``patch_size`` is set; with
``pad_multiple`` (eval / encode) every split gives whole volumes padded at the end to that multiple.

Example:
    >>> ds = VolumeFolder("scans/", patch_size=[64, 64, 64], intensity="ct")  # doctest: +SKIP
    >>> ds[0]["data"].shape                                                  # doctest: +SKIP
    torch.Size([1, 64, 64, 64])
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ndvq.data.common import (
    PADDING_WARN_SHARE,
    FileDataset,
    augment_nd,
    crop_box,
    fitting_patch,
    pad_to,
    split_files,
    split_positions,
    warn_skip,
)
from ndvq.errors import DataError

__all__ = ["VolumeFolder", "VOLUME_EXTENSIONS", "intensity_map"]

VOLUME_EXTENSIONS = ("nii", "nii.gz", "npy")
_MAX_STAT_VOXELS = 2_000_000  # percentiles / moments are estimated on at most this many voxels


def _is_nifti(path: Path) -> bool:
    n = path.name.lower()
    return n.endswith(".nii") or n.endswith(".nii.gz")


def _open(path: Path):
    """``(array-like [X, Y, Z(, C)] or [C, D, H, W], spatial shape, channels, channel_last, affine)``."""
    if _is_nifti(path):
        import nibabel as nib

        img = nib.load(str(path))
        shape = tuple(int(s) for s in img.shape)
        if len(shape) == 5 and shape[3] == 1:  # [X, Y, Z, 1, C] (NIfTI vector intent)
            shape = shape[:3] + shape[4:]
        if len(shape) not in (3, 4):
            raise DataError(f"expected a 3-D or 4-D NIfTI image, got shape {img.shape}")
        return img.dataobj, shape[:3], (shape[3] if len(shape) == 4 else 1), True, np.asarray(img.affine, np.float64)
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    if arr.ndim not in (3, 4) or arr.dtype.kind not in "fiub":
        raise DataError(f"expected a numeric 3-D [D, H, W] or 4-D [C, D, H, W] array, got {arr.dtype} {arr.shape}")
    shape = tuple(int(s) for s in arr.shape)
    return arr, shape[-3:], (shape[0] if arr.ndim == 4 else 1), False, np.eye(4)


def stored_format(path: Path) -> dict:
    """``{"source_format": "nifti" | "npy", "source_ndim", "dtype"}`` of a volume file, from its header:
    what :func:`ndvq.data.write_item` needs to write a reconstruction back in the source's own format and
    number type (``dtype``: the stored type, ``float32`` when a NIfTI scaling makes the values non-integer);
    ``{}`` when the header cannot be read (the writer's defaults then: NIfTI, float32)."""
    try:
        return _stored_format(path)
    except Exception:  # noqa: BLE001 - reading the item names the file; its info only loses the number type
        return {}


def _stored_format(path: Path) -> dict:
    if _is_nifti(path):
        import nibabel as nib

        img = nib.load(str(path))
        slope, inter = getattr(img.dataobj, "slope", 1.0), getattr(img.dataobj, "inter", 0.0)  # moved off the header
        scaled = slope != 1 or inter != 0
        dtype = np.dtype("float32") if scaled else np.dtype(img.get_data_dtype())
        return {"source_format": "nifti", "source_ndim": len(img.shape), "dtype": dtype.newbyteorder("=").name}
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    return {"source_format": "npy", "source_ndim": int(arr.ndim), "dtype": arr.dtype.newbyteorder("=").name}


def _read(src, box: tuple[slice, ...], channels: int, channel_last: bool) -> np.ndarray:
    """The voxels in ``box`` (3 slices) as ``float32 [C, x, y, z]``."""
    if channel_last:
        a = np.asarray(src[box + ((slice(None),) if channels > 1 or len(src.shape) == 4 else ())], np.float32)
        a = a.reshape(*a.shape[:3], -1)
        return np.ascontiguousarray(np.moveaxis(a, -1, 0))  # [x, y, z, C] -> [C, x, y, z]
    a = np.array(src[(Ellipsis,) + box], np.float32)  # a copy (the source may be a read-only memmap)
    return a[None] if a.ndim == 3 else a


def intensity_map(v: np.ndarray, intensity: str, percentiles=(0.5, 99.5), ct_window=(-1000.0, 1000.0)) -> tuple[float, float]:
    """``(scale, offset)`` with ``normalised = raw * scale + offset`` for a whole volume ``v``."""
    if intensity == "none":
        return 1.0, 0.0
    flat = v.ravel()
    if flat.size > _MAX_STAT_VOXELS:
        flat = flat[:: flat.size // _MAX_STAT_VOXELS + 1]
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        raise DataError("volume has no finite voxels")
    if intensity in ("percentile", "ct"):
        lo, hi = (np.percentile(flat, list(percentiles)) if intensity == "percentile" else ct_window)
        lo, hi = float(lo), float(hi)
        if hi <= lo:
            hi = lo + 1.0  # constant volume
        return 2.0 / (hi - lo), -2.0 * lo / (hi - lo) - 1.0
    if intensity == "zscore":
        fg = flat[flat > flat.min()]
        fg = fg if fg.size else flat
        mean, std = float(fg.mean()), float(fg.std())
        std = std if std > 1e-8 else 1.0
        return 1.0 / (5 * std), -mean / (5 * std)
    raise DataError(f"intensity must be 'percentile', 'ct', 'zscore' or 'none', got {intensity!r}")


class VolumeFolder(FileDataset):
    """3-D volumes from a folder (module docstring: layouts, splits, intensity).

    Args:
        root: data folder (layouts in :mod:`ndvq.data.common`).
        split: ``"train" | "val" | "all"``. Default ``"train"``.
        val_dir, train_split, split_seed, subfolders: as for images. Defaults None, 0.9, 0, None.
        extensions: Default ``nii nii.gz npy``.
        channels: expected channel count. Default None: the count most files have (others are skipped
            with a warning naming them).
        patch_size: ``[X, Y, Z]`` (or ``[S]``) patch size. Default None: whole volumes.
        patches_per_item: random patches per volume per epoch (train). Default 1.
        intensity: ``"percentile" | "ct" | "zscore" | "none"``. Default ``"percentile"``.
        percentiles: ``(low, high)`` for ``"percentile"``. Default (0.5, 99.5).
        ct_window: ``(low, high)`` HU for ``"ct"``. Default (-1000, 1000).
        augment: random flips along every axis (train split). Default False.
        pad_multiple: whole volumes padded to a multiple of this per axis (eval/encode). Default None.
        cache_mb: decompressed ``.nii.gz`` volumes kept in memory per process (least recently used
            dropped first), so repeated patches do not decompress the file again; uncompressed
            ``.nii`` and ``.npy`` are memory-mapped and need no cache. Default 256.
    """

    modality, n_dims = "volume", 3

    def __init__(self, root, split: str = "train", val_dir=None, train_split: float = 0.9, split_seed: int = 0,
                 subfolders: Sequence[str] | None = None, extensions: Sequence[str] | None = None,
                 channels: int | None = None, patch_size: Sequence[int] | None = None, patches_per_item: int = 1,
                 intensity: str = "percentile", percentiles: Sequence[float] = (0.5, 99.5),
                 ct_window: Sequence[float] = (-1000.0, 1000.0), augment: bool = False,
                 pad_multiple: Sequence[int] | None = None, cache_mb: float = 256):
        super().__init__()
        if intensity not in ("percentile", "ct", "zscore", "none"):
            raise DataError(f"intensity must be 'percentile', 'ct', 'zscore' or 'none', got {intensity!r}")
        lo, hi = (float(p) for p in percentiles)
        if not 0 <= lo < hi <= 100:
            raise DataError(f"percentiles must satisfy 0 <= low < high <= 100, got {list(percentiles)}")
        if float(ct_window[0]) >= float(ct_window[1]):
            raise DataError(f"ct_window must be (low, high) with low < high, got {list(ct_window)}")
        self.split, self.intensity = split, intensity
        self.percentiles, self.ct_window = (lo, hi), (float(ct_window[0]), float(ct_window[1]))
        self.pad_multiple = tuple(pad_multiple) if pad_multiple is not None else None
        ps = None if patch_size is None else [int(p) for p in patch_size]
        if ps is not None and (len(ps) not in (1, 3) or min(ps) < 1):
            raise DataError(f"volume patch_size must be [X, Y, Z] (or [S]) with positive entries, got {ps}")
        self.patch_size = None if ps is None else tuple(ps * 3 if len(ps) == 1 else ps)
        self.whole = self.pad_multiple is not None
        if self.whole:
            self.patch_size = None  # whole volumes for eval / encode / decode
        self.patches_per_item = int(patches_per_item) if (split == "train" and self.patch_size) else 1
        self.augment = bool(augment) and split == "train"
        files, self.layout = split_files(root, split, extensions or VOLUME_EXTENSIONS, val_dir, train_split,
                                         split_seed, subfolders)
        self.meta: list[dict] = []
        for f in files:
            try:
                _, shape, c, _, affine = _open(f)
            except Exception as e:  # noqa: BLE001 - an unreadable file is skipped, never fatal
                self.skipped.append((str(f), f"{type(e).__name__}: {e}"))
                warn_skip(f, e)
                continue
            if min(shape) < 1:
                self.skipped.append((str(f), f"empty volume of shape {list(shape)}"))
                warn_skip(f, f"empty volume of shape {list(shape)}")
                continue
            self.files.append(f)
            self.meta.append({"shape": shape, "channels": c, "affine": affine, "z": (0, int(shape[-1]))})
        self.meta = self._keep_channel_count(self.meta, channels)
        self._check_files(root)
        if self.single_file:  # one volume: split along its last axis (val = the last slices)
            m = self.meta[0]
            m["z"] = split_positions(int(m["shape"][-1]), split, train_split)
            m["shape"] = (*m["shape"][:2], m["z"][1] - m["z"][0])
        self.channels = self.meta[0]["channels"] if self.meta else int(channels or 1)  # empty: no validation split
        self._maps: dict[int, tuple[float, float]] = {}
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.cache_bytes = int(cache_mb * 2**20)
        shapes = {m["shape"] for m in self.meta}
        if self.patch_size is None and self.pad_multiple is None and len(shapes) > 1:
            raise DataError(f"volumes in {str(root)!r} have different shapes {sorted(shapes)[:3]} and cannot be "
                             f"batched; set data.patch_size=[X, Y, Z]")
        small = [m for m in self.meta if self.patch_size and any(s < q for s, q in zip(m["shape"], self.patch_size))]
        if small:
            fit = fitting_patch([m["shape"] for m in self.meta], self.patch_size)
            smaller = fit != list(self.patch_size) and split != "val"  # the train split's to choose
            self.suggested_fix = f"data.patch_size={fit}" if smaller else None
            self.note(f"{len(small)} of {len(self.meta)}{'' if split == 'all' else ' ' + split} volume(s) are smaller "
                      f"than data.patch_size={list(self.patch_size)} and are padded"
                      + (f"; data.patch_size={fit} keeps the padding within {PADDING_WARN_SHARE:.0%} of an item"
                         if smaller else ""), warn=True)

    def extent(self, i: int) -> tuple[list[int], list[int]]:
        shape = [int(s) for s in self.meta[i // self.patches_per_item]["shape"]]
        target = list(self.patch_size) if self.patch_size else shape
        return [min(s, t) for s, t in zip(shape, target)], target

    def __len__(self) -> int:
        return len(self.files) * self.patches_per_item

    def _path(self, i: int) -> Path:
        return self.files[i // self.patches_per_item]

    def _source(self, k: int):
        """``(array-like, spatial shape, channels, channel_last)``; a compressed file is decompressed once
        and kept (as ``[C, X, Y, Z]``) while it fits in ``cache_mb``."""
        if k in self._cache:
            self._cache.move_to_end(k)
            v = self._cache[k]
            return v, v.shape[1:], v.shape[0], False
        src, shape, c, channel_last, _ = _open(self.files[k])
        if not self.files[k].name.lower().endswith(".gz"):
            return src, shape, c, channel_last
        v = _read(src, (slice(None),) * 3, c, channel_last)
        if v.nbytes <= self.cache_bytes:
            while self._cache and sum(a.nbytes for a in self._cache.values()) + v.nbytes > self.cache_bytes:
                self._cache.popitem(last=False)
            self._cache[k] = v
        return v, v.shape[1:], v.shape[0], False

    def _value_map(self, k: int, src, c: int, channel_last: bool) -> tuple[float, float]:
        if k not in self._maps:
            whole = src if isinstance(src, np.ndarray) and src.ndim == 4 and not channel_last else \
                _read(src, (slice(None),) * 3, c, channel_last)
            self._maps[k] = intensity_map(whole, self.intensity, self.percentiles, self.ct_window)
        return self._maps[k]

    def _box(self, k: int, random_: bool) -> tuple[int, ...]:
        """Start of the item in the file (a single-file split starts at its first slice)."""
        m = self.meta[k]
        start = (0, 0, 0) if self.patch_size is None else crop_box(m["shape"], self.patch_size, random_)
        return (*start[:2], start[2] + m["z"][0])

    def item_info(self, i: int) -> dict:
        """``{"path", "affine" (4x4 of the item: shifted to the patch for centre patches), "shape" (of the
        volume), "offset", "item_shape" (before padding), "value_map": [scale, offset], "intensity"}`` and
        :func:`stored_format`'s keys; ``value_map`` is computed on first use."""
        k = i // self.patches_per_item
        m = self.meta[k]
        offset = self._box(k, False) if self.split != "train" else (0, 0, 0)
        affine = m["affine"].copy()
        affine[:3, 3] = affine[:3, :3] @ np.asarray(offset, np.float64) + affine[:3, 3]
        info = {"path": str(self.files[k]), "affine": affine, "shape": list(m["shape"]), "offset": list(offset),
                "item_shape": self.extent(i)[0], "intensity": self.intensity, **stored_format(self.files[k])}
        try:
            src, _, c, cl = self._source(k)
            info["value_map"] = list(self._value_map(k, src, c, cl))
        except Exception as e:  # noqa: BLE001
            warn_skip(self.files[k], e)
        if self.split == "train" and self.patch_size is not None:
            info["note"] = "random training patch: offset and affine refer to the whole volume"
        return info

    def _load(self, i: int) -> tuple[torch.Tensor, list[int]]:
        k = i // self.patches_per_item
        src, shape, c, channel_last = self._source(k)
        scale, offset = self._value_map(k, src, c, channel_last)
        start = self._box(k, self.split == "train")
        size = self.patch_size or self.meta[k]["shape"]
        box = tuple(slice(s, s + int(n)) for s, n in zip(start, size))
        v = _read(src, box, c, channel_last)
        if not np.isfinite(scale * offset) or not np.isfinite(v).any():
            raise DataError("volume holds no finite values")
        if not np.isfinite(v).all():
            v = np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
        x = torch.from_numpy(v) * scale + offset
        if self.intensity != "none":
            x = x.clamp(-1, 1)
        if self.patch_size is not None:
            x = pad_to(x, self.patch_size, value=-1.0)
        if self.augment:
            x = augment_nd(x, 3, max_rotate=0, max_scale=0, max_shift=0)
        return x.contiguous(), self.extent(i)[0]
