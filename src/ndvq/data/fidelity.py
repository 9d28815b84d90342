"""Compare decoded files with their originals in the units the model saw (the round-trip check).

``model_units(modality, path, info)`` reads a file (an original or a decoded one) and applies the
*original item's* normalisation recorded in ``info`` (``dataset.item_info(i)`` of the whole-file
item, as stored in the codes file): the audio gain, the series mean/std, the volume intensity map,
the float-image value range. Both files go through the same map, so
``file_psnr(original, decoded)`` is the PSNR ``ndvq eval`` reports for that file.

Example:
    >>> import numpy as np
    >>> round(file_psnr(np.zeros((1, 8)), np.full((1, 8), 0.1), 2.0), 2)
    26.02
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["model_units", "file_psnr", "file_facts"]


def _audio(path: Path, info: dict) -> np.ndarray:
    import soundfile as sf

    a = sf.read(str(path), dtype="float64", always_2d=True)[0]  # [T, C]
    return (a.mean(axis=1, keepdims=True) * float(info.get("gain") or 1.0)).T  # [T, 1] -> [1, T]


def _series(path: Path, info: dict) -> np.ndarray:
    from ndvq.data.series import read_series

    a = read_series(path)[0][1].astype(np.float64)  # [T, C]
    if info.get("standardized", True) and info.get("mean") is not None:
        a = (a - np.asarray(info["mean"])) / np.asarray(info["std"])
    return np.nan_to_num(a, nan=0.0).T


def _image(path: Path, info: dict) -> np.ndarray:
    if info.get("bit_depth") == "float":
        import tifffile

        a = tifffile.imread(str(path)).astype(np.float64)
        lo, hi = float(info.get("value_min", 0.0)), float(info.get("value_max", 1.0))
        u = (a - lo) / max(hi - lo, 1e-12)
    else:
        from ndvq.data.image import read_image

        u = read_image(path)[0].astype(np.float64)
    u = u[..., None] if u.ndim == 2 else u
    return np.moveaxis(u * 2 - 1, -1, 0)  # [H, W, C] -> [C, H, W]


def _volume(path: Path, info: dict) -> np.ndarray:
    import nibabel as nib

    v = np.asarray(nib.load(str(path)).dataobj, np.float64)
    v = v[None] if v.ndim == 3 else np.moveaxis(v, -1, 0)  # [X, Y, Z(, C)] -> [C, X, Y, Z]
    scale, offset = info.get("value_map") or (1.0, 0.0)
    v = np.nan_to_num(v) * float(scale) + float(offset)
    return np.clip(v, -1, 1) if info.get("intensity", "percentile") != "none" else v


def _video(path: Path, info: dict) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    a = np.stack(frames).astype(np.float64) / 127.5 - 1  # [T, H, W, 3]
    return np.moveaxis(a, -1, 0)  # [T, H, W, C] -> [C, T, H, W]


def model_units(modality: str, path: str | Path, info: dict) -> np.ndarray:
    """File ``path`` as ``float64 [C, *S]`` in the normalised units of the original item ``info``."""
    read = {"audio": _audio, "series": _series, "image": _image, "volume": _volume, "video": _video}[modality]
    return read(Path(path), dict(info))


def file_psnr(x: np.ndarray, y: np.ndarray, data_range: float | None = 2.0) -> float:
    """PSNR in dB between two arrays of one shape (``data_range`` None: ``x``'s own max - min)."""
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} and {y.shape}")
    rng = float(x.max() - x.min()) if data_range is None else float(data_range)
    err = max(float(np.mean((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2)), 1e-12)
    return 10 * math.log10(max(rng, 1e-12) ** 2 / err)


def file_facts(modality: str, path: str | Path) -> dict:
    """What a user checks first: ``{"name", "shape"}`` plus the sample rate (audio), frame rate
    (video), affine (volume) or column names (series tables)."""
    path = Path(path)
    facts: dict = {"name": path.name}
    if modality == "audio":
        import soundfile as sf

        i = sf.info(str(path))
        facts.update(shape=[i.frames, i.channels], rate=i.samplerate)
    elif modality == "series":
        from ndvq.data.series import read_series

        _, a, cols = read_series(path)[0]
        facts.update(shape=list(a.shape), columns=cols)
    elif modality == "volume":
        import nibabel as nib

        img = nib.load(str(path))
        facts.update(shape=list(img.shape), affine=np.asarray(img.affine).round(6).tolist())
    elif modality == "video":
        from ndvq.data.video import probe_video

        m = probe_video(path)
        facts.update(shape=[m["frames"], m["height"], m["width"]], rate=round(float(m["fps"]), 3))
    else:
        from ndvq.data.image import _header

        facts.update(shape=list(_header(path)[0]))
    return facts
