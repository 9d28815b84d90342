"""Image folders (2D): PNG, JPEG, BMP, TIFF (8/16-bit, float32), gray / RGB / RGBA.

Items are ``[C, H, W]`` floats in ``[-1, 1]``. Integer images are scaled by their type's range
(8-bit / 255, 16-bit / 65535); float images already in ``[0, 1]`` are kept, others are scaled by
their own min/max (recorded in ``item_info``). Folder layouts: see :mod:`ndvq.data.common`.

Example:
    >>> ds = ImageFolder("photos/", split="train", resolution=[64, 64], channels=3)  # doctest: +SKIP
    >>> ds[0]["data"].shape                                                          # doctest: +SKIP
    torch.Size([3, 64, 64])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ndvq.data.common import (
    PADDING_WARN_SHARE,
    FileDataset,
    augment_nd,
    center_crop,
    fit_and_crop,
    fitting_patch,
    random_crop,
    split_files,
    warn_skip,
)
from ndvq.errors import DataError

__all__ = ["ImageFolder", "read_image", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "bmp", "tif", "tiff")
_TIFF = (".tif", ".tiff")
_MODE_CHANNELS = {"1": 1, "L": 1, "I": 1, "I;16": 1, "I;16B": 1, "I;16L": 1, "F": 1, "LA": 2, "La": 2,
                  "P": 3, "PA": 4, "RGB": 3, "YCbCr": 3, "CMYK": 3, "LAB": 3, "HSV": 3, "RGBA": 4, "RGBa": 4, "RGBX": 3}


_EXIF_ORIENTATION = 0x0112


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in _TIFF


def _header(path: Path) -> tuple[tuple[int, int], int, int | str]:
    """``((H, W), source channels, bit depth)`` from the file header, without decoding the pixels."""
    if _is_tiff(path):
        import tifffile

        with tifffile.TiffFile(path) as tf:
            s = tf.series[0]
            shape, axes, dtype = s.shape, s.axes, np.dtype(s.dtype)
        shape = _squeeze_tiff_shape(shape, axes)
        depth = "float" if dtype.kind == "f" else (8 if dtype.itemsize == 1 else 16)
        return (shape[0], shape[1]), (shape[2] if len(shape) == 3 else 1), depth
    from PIL import Image

    with Image.open(path) as im:
        im.verify()  # checks the file structure (PNG CRCs, ...), not the pixel data
    with Image.open(path) as im:
        c = _MODE_CHANNELS.get(im.mode, 3)
        if im.mode == "P" and "transparency" in im.info:
            c = 4
        depth = 16 if im.mode.startswith("I") else ("float" if im.mode == "F" else 8)
        h, w = im.size[1], im.size[0]
        return ((w, h) if _orientation(im) >= 5 else (h, w)), c, depth


def _orientation(im) -> int:
    """The file's EXIF orientation (1: upright, 2-4: flipped or turned 180 degrees, 5-8: turned 90 degrees,
    so height and width swap); 1 without one or for a malformed EXIF block. Images are read upright
    (``ImageOps.exif_transpose``), as viewers show them."""
    try:
        o = int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - a malformed EXIF block: the pixels as stored
        return 1
    return o if 1 <= o <= 8 else 1


def _squeeze_tiff_shape(shape, axes) -> tuple[int, ...]:
    shape = tuple(int(s) for s, a in zip(shape, axes) if not (s == 1 and a not in "YX"))
    if len(shape) == 3 and shape[0] in (1, 2, 3, 4) and shape[-1] not in (1, 2, 3, 4):
        shape = (shape[1], shape[2], shape[0])  # planar [C, H, W] -> [H, W, C]
    if len(shape) not in (2, 3):
        raise DataError(f"expected a 2D image (H, W[, C]), got a TIFF of shape {shape} (axes {axes})")
    return shape


def read_image(path: str | Path, min_size: tuple[int, int] | None = None) -> tuple[np.ndarray, dict]:
    """Decode an image to ``float32 [H, W, C]`` in ``[0, 1]`` plus facts about the source; a photograph
    with an EXIF orientation is turned upright, as viewers show it (and ``ndvq decode`` writes it).

    ``min_size=(H, W)``: the image will be resized to cover ``(H, W)`` anyway, so a JPEG may decode at a
    reduced scale (1/2, 1/4, 1/8) and any 8-bit image is box-reduced by an integer factor that still
    covers ``(H, W)`` (much faster for large images). Default None: full size.

    Returns ``(array, info)`` with ``info = {"bit_depth": 8 | 16 | "float", "source_channels": C,
    "value_min", "value_max"}`` (the last two: the min/max a float image was scaled by).
    """
    path = Path(path)
    if _is_tiff(path):
        import tifffile

        arr = np.asarray(tifffile.imread(path))
        arr = np.squeeze(arr) if arr.ndim > 2 else arr
        if arr.ndim == 3 and arr.shape[0] in (1, 2, 3, 4) and arr.shape[-1] not in (1, 2, 3, 4):
            arr = np.moveaxis(arr, 0, -1)
    else:
        from PIL import Image, ImageOps

        with Image.open(path) as im:
            orientation = _orientation(im)
            if min_size is not None and im.format == "JPEG":
                size = (int(min_size[1]), int(min_size[0]))  # (W, H) as stored: swapped when the file is turned
                im.draft(im.mode, size[::-1] if orientation >= 5 else size)
            if orientation != 1:
                im = ImageOps.exif_transpose(im)  # upright, as a viewer shows it
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
                im = im.convert("L" if im.mode == "1" else "RGB")
            elif im.mode in ("RGBa", "La", "PA"):
                im = im.convert("RGBA" if im.mode != "La" else "LA")
            if min_size is not None and im.mode in ("L", "LA", "RGB", "RGBA"):
                factor = min(im.size[1] // int(min_size[0]), im.size[0] // int(min_size[1]))
                if factor >= 2:
                    im = im.reduce(factor)  # box filter: antialiased, and still covers min_size
            arr = np.asarray(im)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise DataError(f"expected an image of shape (H, W[, C]), got {arr.shape}")
    info: dict = {"source_channels": int(arr.shape[2])}
    if arr.dtype == np.uint8 or arr.dtype == bool:
        out, info["bit_depth"] = arr.astype(np.float32) / (1.0 if arr.dtype == bool else 255.0), 8
    elif arr.dtype == np.uint16 or (arr.dtype.kind in "iu" and arr.max(initial=0) <= 65535 and arr.min(initial=0) >= 0):
        out, info["bit_depth"] = arr.astype(np.float32) / 65535.0, 16
    else:
        out = arr.astype(np.float32)
        if not np.isfinite(out).all():
            raise DataError("image contains NaN or infinite values")
        lo, hi = float(out.min()), float(out.max())
        info["bit_depth"] = "float"
        if lo < 0 or hi > 1:
            out = (out - lo) / max(hi - lo, 1e-12)
            info["value_min"], info["value_max"] = lo, hi
    return out, info


def convert_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """``[H, W, c]`` (c = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) -> ``[H, W, channels]`` (1, 3 or 4)."""
    c = x.shape[2]
    if c == channels:
        return x
    gray = x[:, :, :1] if c <= 2 else (0.299 * x[:, :, 0:1] + 0.587 * x[:, :, 1:2] + 0.114 * x[:, :, 2:3])
    rgb = np.repeat(gray, 3, axis=2) if c <= 2 else x[:, :, :3]
    if channels == 1:
        return gray
    if channels == 3:
        return rgb
    alpha = x[:, :, c - 1:c] if c in (2, 4) else np.ones_like(gray)
    return np.concatenate([rgb, alpha], axis=2)


class ImageFolder(FileDataset):
    """Images from a folder, one item per file (``patches_per_item`` random patches per file in training).

    Args:
        root: data folder (layouts in :mod:`ndvq.data.common`).
        split: ``"train" | "val" | "all"``. Default ``"train"``.
        val_dir: separate validation folder. Default None.
        train_split: train fraction of a single folder. Default 0.9.
        split_seed: seed of the single-folder split. Default 0.
        subfolders: only these subfolders of ``root`` (e.g. ``["dente", "edente"]``). Default None: all.
        extensions: file extensions. Default ``png jpg jpeg bmp tif tiff``.
        channels: 1 (gray), 3 (RGB) or 4 (RGBA). Default None: 3 if any file has colour, else 1.
        resolution: ``[H, W]`` (or ``[S]`` for square) every image is brought to with ``crop``. Default None.
        crop: ``"center"`` / ``"random"`` (scale to cover ``resolution`` then crop; random only in the
            train split), ``"resize"`` (exactly ``resolution``), ``"none"``. Default ``"center"``.
        patch_size: ``[H, W]`` patch cut after ``resolution``: random in the train split, centred in val.
            Smaller images are padded at the end (their ``valid`` extent says how much is real; the
            start summary warns). Default None.
        patches_per_item: random patches per file per epoch (train split with ``patch_size``). Default 1.
        augment: random flips and a small affine (rotation +-10 deg, zoom +-10%, shift +-5%) in the
            train split. Default False.
        pad_multiple: whole images at their own size (``resolution`` and ``patch_size`` ignored), padded
            at the end to a multiple of this per axis (eval / encode / decode). Default None.
    """

    modality, n_dims = "image", 2

    def __init__(self, root, split: str = "train", val_dir=None, train_split: float = 0.9, split_seed: int = 0,
                 subfolders: Sequence[str] | None = None, extensions: Sequence[str] | None = None,
                 channels: int | None = None, resolution: Sequence[int] | None = None, crop: str = "center",
                 patch_size: Sequence[int] | None = None, patches_per_item: int = 1, augment: bool = False,
                 pad_multiple: Sequence[int] | None = None):
        super().__init__()
        if channels not in (None, 1, 3, 4):
            raise DataError(f"image channels must be 1 (gray), 3 (RGB) or 4 (RGBA), got {channels}")
        if crop not in ("center", "random", "resize", "none"):
            raise DataError(f"crop must be 'center', 'random', 'resize' or 'none', got {crop!r}")
        self.split, self.crop, self.augment = split, crop, bool(augment) and split == "train"
        self.resolution = _size2(resolution, "resolution")
        self.patch_size = _size2(patch_size, "patch_size")
        self.pad_multiple = tuple(pad_multiple) if pad_multiple is not None else None
        self.whole = self.pad_multiple is not None
        if self.whole:  # whole images at their own size for eval / encode / decode
            self.patch_size, self.resolution = None, None
        self.patches_per_item = patches_per_item if (split == "train" and self.patch_size) else 1
        files, self.layout = split_files(root, split, extensions or IMAGE_EXTENSIONS, val_dir, train_split,
                                         split_seed, subfolders)
        sizes, chans, self.depths = [], [], []
        for f in files:
            try:
                size, c, depth = _header(f)
            except Exception as e:  # noqa: BLE001 - an unreadable file is skipped, never fatal
                self.skipped.append((str(f), f"{type(e).__name__}: {e}"))
                warn_skip(f, e)
                continue
            self.files.append(f)
            sizes.append(size)
            chans.append(c)
            self.depths.append(depth)
        self._check_files(root)
        self.channels = channels or (3 if any(c >= 3 for c in chans) else 1)
        self.sizes, self.source_channels = sizes, chans
        if self.resolution is None and self.patch_size is None and self.pad_multiple is None and len(set(sizes)) > 1:
            a, b = sorted(set(sizes))[:2]
            raise DataError(f"images in {str(root)!r} have different sizes (e.g. {a[0]}x{a[1]} and {b[0]}x{b[1]}) "
                             f"and cannot be batched; set data.resolution=[H, W] or data.patch_size=[H, W]")
        self._note_small(sizes)

    def _shape_of(self, k: int) -> tuple[int, int]:
        """The image's size after ``resolution`` (before the patch is cut)."""
        return tuple(self.resolution) if self.resolution and self.crop != "none" else tuple(self.sizes[k])

    def _note_small(self, sizes) -> None:
        if self.patch_size is None or not sizes:
            return
        small = [k for k in range(len(sizes)) if any(s < p for s, p in zip(self._shape_of(k), self.patch_size))]
        if small:
            fit = fitting_patch([self._shape_of(k) for k in range(len(sizes))], self.patch_size)
            smaller = fit != list(self.patch_size) and self.split != "val"  # the train split's to choose
            self.suggested_fix = f"data.patch_size={fit}" if smaller else None
            self.note(f"{len(small)} of {len(sizes)}{'' if self.split == 'all' else ' ' + self.split} image(s) are "
                      f"smaller than data.patch_size={list(self.patch_size)} and are padded"
                      + (f"; data.patch_size={fit} keeps the padding within {PADDING_WARN_SHARE:.0%} of an item"
                         if smaller else ""), warn=True)

    def extent(self, i: int) -> tuple[list[int], list[int]]:
        shape = list(self._shape_of(i // self.patches_per_item))
        target = list(self.patch_size) if self.patch_size else shape
        return [min(s, t) for s, t in zip(shape, target)], target

    def __len__(self) -> int:
        return len(self.files) * self.patches_per_item

    def _path(self, i: int) -> Path:
        return self.files[i // self.patches_per_item]

    def item_info(self, i: int) -> dict:
        """``{"path", "size": [H, W] (of the file), "item_shape": [H, W] (of the item before padding),
        "bit_depth": 8 | 16 | "float", "channels": the file's own channel count}`` (+ ``value_min/max`` of a
        float image)."""
        k = i // self.patches_per_item
        info = {"path": str(self.files[k]), "size": list(self.sizes[k]), "item_shape": self.extent(i)[0],
                "bit_depth": self.depths[k], "channels": int(self.source_channels[k])}
        if info["bit_depth"] == "float":
            try:
                info.update({k2: v for k2, v in read_image(self.files[k])[1].items() if k2.startswith("value_")})
            except Exception as e:  # noqa: BLE001
                warn_skip(self.files[k], e)
        return info

    def _load(self, i: int) -> tuple[torch.Tensor, list[int]]:
        draft = self.resolution if (self.resolution and self.crop != "none" and self.patch_size is None) else None
        arr, _ = read_image(self._path(i), min_size=draft)
        x = torch.from_numpy(convert_channels(arr, self.channels)).permute(2, 0, 1)  # [H, W, C] -> [C, H, W]
        x = x * 2 - 1
        if not torch.isfinite(x).all():
            raise DataError("image contains NaN or infinite values")
        train = self.split == "train"
        if self.resolution is not None:
            x = fit_and_crop(x, self.resolution, self.crop, random_=train)
        if self.patch_size is not None:
            x = random_crop(x, self.patch_size) if train else center_crop(x, self.patch_size)
        if self.augment:
            x = augment_nd(x, 2).clamp(-1, 1)
        return x, self.extent(i)[0]


def _size2(v, name) -> tuple[int, int] | None:
    if v is None:
        return None
    v = [int(s) for s in v]
    if len(v) == 1:
        v = v * 2
    if len(v) != 2 or min(v) < 1:
        raise DataError(f"image {name} must be [H, W] (or [S]) with positive entries, got {v}")
    return tuple(v)
