"""Built-in sample data: real photographs shipped inside scikit-image, cut into small RGB patches.

Used by the default ``ndvq train`` (no data needed, works offline). The train split is cut from
six photographs (astronaut, coffee, rocket, immunohistochemistry, hubble_deep_field, retina); the
val split from a held-out one (chelsea the cat), so validation measures generalisation to an
unseen image. Patch positions come from a fixed seed: the data are identical on every machine.

The patches are generated on first use and cached as ``uint8`` NPY files in ``$NDVQ_CACHE`` (or
``~/.cache/ndvq``) under ``samples/``; later runs memory-map them. Items are ``[3, H, W]`` floats
in ``[-1, 1]``.

Example:
    >>> ds = SampleImages("train", patch_size=[32, 32], sample_patches=256)
    >>> ds[0]["data"].shape, len(ds)
    (torch.Size([3, 32, 32]), 256)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ndvq.data.common import FileDataset, augment_nd, cache_dir
from ndvq.errors import DataError

__all__ = ["SampleImages", "TRAIN_IMAGES", "VAL_IMAGES", "make_sample_patches"]

TRAIN_IMAGES = ("astronaut", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")
VAL_IMAGES = ("chelsea",)
_VERSION = 1
_SEED = {"train": 1234, "val": 4321}


def _photo(name: str) -> np.ndarray:
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)())
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3]).astype(np.uint8)


def make_sample_patches(split: str, patch_size: Sequence[int], n: int) -> np.ndarray:
    """``uint8 [n, H, W, 3]`` patches of the ``split``'s photographs (cached; deterministic).

    Patches are spread evenly over the photographs (by area) at seeded random positions; nearly
    flat patches (pixel std < 4 of 255, e.g. the black border of the retina image) are redrawn.
    """
    h, w = (int(p) for p in patch_size)
    path = cache_dir() / "samples" / f"v{_VERSION}_{split}_{h}x{w}_{n}.npy"
    if path.is_file():
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            if arr.shape == (n, h, w, 3) and arr.dtype == np.uint8:
                return arr
        except (OSError, ValueError):
            pass  # a broken cache file is rebuilt
    names = TRAIN_IMAGES if split == "train" else VAL_IMAGES
    photos = [_photo(nm) for nm in names]
    small = [nm for nm, p in zip(names, photos) if p.shape[0] < h or p.shape[1] < w]
    if small:
        raise DataError(f"patch_size {h}x{w} is larger than the sample photograph(s) {small}; use at most 256x256")
    rng = np.random.default_rng(_SEED[split] + h * 1000 + w)
    areas = np.array([p.shape[0] * p.shape[1] for p in photos], np.float64)
    which = rng.choice(len(photos), size=n, p=areas / areas.sum())
    out = np.empty((n, h, w, 3), np.uint8)
    for j, k in enumerate(which):
        p = photos[k]
        for _ in range(20):
            y, x = rng.integers(0, p.shape[0] - h + 1), rng.integers(0, p.shape[1] - w + 1)
            patch = p[y: y + h, x: x + w]
            if patch.std() >= 4:
                break
        out[j] = patch
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npy")
    np.save(tmp, out)
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r", allow_pickle=False)


class SampleImages(FileDataset):
    """Patches of real photographs (scikit-image), the built-in default data.

    Args:
        split: ``"train" | "val" | "all"`` (``"all"``: train followed by val). Default ``"train"``.
        patch_size: ``[H, W]`` (or ``[S]``) of the patches. Default ``[32, 32]``.
        sample_patches: patches in the train split; the val split has an eighth of it (at least 64).
            Default 2048.
        channels: 3 (RGB) or 1 (gray, luma). Default None: 3.
        augment: random horizontal/vertical flips (train split). Default False.
        pad_multiple: pad items to a multiple of this (eval/encode). Default None.
    """

    modality, n_dims = "image", 2

    def __init__(self, split: str = "train", patch_size: Sequence[int] | None = None, sample_patches: int = 2048,
                 channels: int | None = None, augment: bool = False, pad_multiple: Sequence[int] | None = None):
        super().__init__()
        if channels not in (None, 1, 3):
            raise DataError(f"the sample images have 3 channels (or 1 as gray), got channels={channels}")
        ps = [32, 32] if patch_size is None else [int(p) for p in patch_size]
        ps = ps * 2 if len(ps) == 1 else ps
        if len(ps) != 2 or min(ps) < 1:
            raise DataError(f"samples patch_size must be [H, W] (or [S]) with positive entries, got {ps}")
        if int(sample_patches) < 1:
            raise DataError(f"sample_patches must be >= 1, got {sample_patches}")
        self.split, self.patch_size, self.channels = split, tuple(ps), channels or 3
        self.augment = bool(augment) and split == "train"
        self.pad_multiple = tuple(pad_multiple) if pad_multiple is not None else None
        n_val = max(64, int(sample_patches) // 8)
        parts = []
        if split in ("train", "all"):
            parts.append(("train", make_sample_patches("train", ps, int(sample_patches))))
        if split in ("val", "all"):
            parts.append(("val", make_sample_patches("val", ps, n_val)))
        self._parts = parts
        self._offsets = np.cumsum([0] + [len(a) for _, a in parts])
        self.files = [Path(f"skimage.data.{nm}") for s, _ in parts for nm in (TRAIN_IMAGES if s == "train" else VAL_IMAGES)]
        self.layout = f"built-in scikit-image photographs, cached in {cache_dir() / 'samples'}"

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _where(self, i: int) -> tuple[int, int]:
        p = int(np.searchsorted(self._offsets, i, side="right") - 1)
        return p, i - int(self._offsets[p])

    def item_info(self, i: int) -> dict:
        p, j = self._where(i)
        return {"path": f"samples/{self._parts[p][0]}/{j:06d}", "split": self._parts[p][0], "patch": j,
                "item_shape": list(self.patch_size),
                "bit_depth": 8}

    def _load(self, i: int) -> torch.Tensor:
        p, j = self._where(i)
        a = torch.from_numpy(np.array(self._parts[p][1][j]))  # [H, W, 3] uint8
        x = a.permute(2, 0, 1).float() / 127.5 - 1  # [H, W, 3] -> [3, H, W]
        if self.channels == 1:
            x = (0.299 * x[0:1] + 0.587 * x[1:2] + 0.114 * x[2:3])
        if self.augment:
            x = augment_nd(x, 2, max_rotate=0, max_scale=0, max_shift=0)
        return x

    def extent(self, i: int) -> tuple[list[int], list[int]]:
        return list(self.patch_size), list(self.patch_size)
