"""Write items back to files in their modality's own format, and reconstruction samples to look at.

``write_item(modality, x[C, *S], path_stem, info)`` (used by ``ndvq decode``):

=========  ===================================================================================
image      PNG (8-bit; 16-bit gray PNG when the source was 16-bit; TIFF for 16-bit colour and
           float sources, float32 with the source's min/max restored)
video      MP4 (H.264 via PyAV, ``info["fps"]``, default 8)
audio      WAV at ``info["source_rate"]`` (resampled back from ``info["sample_rate"]``), cut to
           ``info["frames"]``, the normalisation ``info["gain"]`` undone (defaults: 16000 Hz, as given)
series     CSV with the source's column names (table sources) or NPY ``[T, C]``, de-standardised
           with ``info["mean"]``/``info["std"]`` when present
volume     NIfTI ``.nii.gz`` with ``info["affine"]`` (default identity) and the intensity map
           ``info["value_map"]`` undone (original units)
=========  ===================================================================================

``write_samples(modality, inputs[B, C, *S], recons[B, C, *S], out_dir, info)`` (used during
training): a PNG grid (inputs above reconstructions) for images; a GIF for video; WAV files and a
waveform/spectrogram PNG for audio; NIfTI files and a mid-slice PNG for volumes; a PNG plot for series.

Inputs of image/video/audio/volume are expected in ``[-1, 1]``; values are clipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ndvq.data.image import convert_channels
from ndvq.errors import DataError

__all__ = ["write_item", "write_samples", "MODALITIES"]

MODALITIES = ("image", "video", "audio", "series", "volume")


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, np.float32)


def _check(modality: str, x: np.ndarray, batched: bool = False) -> None:
    if modality not in MODALITIES:
        raise DataError(f"modality must be one of {MODALITIES}, got {modality!r}")
    n_dims = {"image": 2, "video": 3, "audio": 1, "series": 1, "volume": 3}[modality]
    want = n_dims + 1 + int(batched)
    if x.ndim != want:
        lay = ("[B, C, " if batched else "[C, ") + ", ".join("S" * n_dims) + "]"
        raise DataError(f"{modality} {'batches' if batched else 'items'} must be {lay} ({want} axes), got shape {list(x.shape)}")


def _to_unit(x: np.ndarray) -> np.ndarray:
    return np.clip((x + 1) / 2, 0, 1)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.round(_to_unit(x) * 255).astype(np.uint8)


def _hwc(img: np.ndarray) -> np.ndarray:
    """``[C, H, W]`` -> ``[H, W, C]`` with C in (1, 3, 4); 2 channels get a zero third."""
    c = img.shape[0]
    if c == 2:
        img = np.concatenate([img, np.full_like(img[:1], -1)], axis=0)
    elif c > 4:
        img = img[:3]
    return np.moveaxis(img, 0, -1)


# ------------------------------------------------------------------------------------ items
def write_item(modality: str, x, path_stem: str | Path, info: dict | None = None) -> list[Path]:
    """Write one item ``x [C, *S]`` as a file of the modality's format; returns the written paths.

    Args:
        modality: ``"image" | "video" | "audio" | "series" | "volume"``.
        x: the item (tensor or array), values in ``[-1, 1]`` (series: z-scored).
        path_stem: output path without extension (folders are created).
        info: ``dataset.item_info(i)`` of the item (fps, sample_rate, affine, mean/std, bit_depth,
            value_map, ...). ``info["item_shape"]`` (spatial shape before padding) crops a padded
            ``x`` back to the item's size. Default None.

    Example:
        >>> import tempfile, torch
        >>> d = tempfile.mkdtemp()
        >>> [p.suffix for p in write_item("image", torch.zeros(3, 8, 8), f"{d}/a")]
        ['.png']
    """
    x = _np(x)
    _check(modality, x)
    info = dict(info or {})
    shape = info.get("item_shape")
    if shape is not None and len(shape) == x.ndim - 1:  # undo padding to the model's downsampling
        x = x[(slice(None),) + tuple(slice(0, int(s)) for s in shape)]
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    return [{"image": _write_image, "video": _write_video, "audio": _write_audio, "series": _write_series,
             "volume": _write_volume}[modality](x, stem, info)]


def _file_channels(img: np.ndarray, info: dict) -> np.ndarray:
    """``[H, W, C]`` back in the source file's own channel count (``info["channels"]``) where the data layer
    added channels: a gray file read as RGB is written gray (luminance; exact for replicated gray), RGBA read
    as RGB stays RGB. Channels are never invented."""
    src = info.get("channels")
    target = {1: 1, 2: 1, 3: 3, 4: 4}.get(src, img.shape[2])
    return convert_channels(img, target) if target < img.shape[2] else img


def _write_image(x: np.ndarray, stem: Path, info: dict) -> Path:
    from PIL import Image

    img = _file_channels(_hwc(x), info)
    depth = info.get("bit_depth", 8)
    if depth == "float" or (depth == 16 and img.shape[2] > 1):
        import tifffile

        u = _to_unit(img)
        if depth == "float":
            lo, hi = info.get("value_min", 0.0), info.get("value_max", 1.0)
            arr = (u * (hi - lo) + lo).astype(np.float32)
        else:
            arr = np.round(u * 65535).astype(np.uint16)
        path = stem.with_suffix(".tif")
        tifffile.imwrite(path, arr[:, :, 0] if arr.shape[2] == 1 else arr,
                         photometric="minisblack" if arr.shape[2] == 1 else "rgb")
        return path
    path = stem.with_suffix(".png")
    if depth == 16:  # gray 16-bit PNG
        Image.fromarray(np.round(_to_unit(img[:, :, 0]) * 65535).astype(np.uint16)).save(path)
    else:
        u8 = _to_uint8(img)
        Image.fromarray(u8[:, :, 0] if u8.shape[2] == 1 else u8).save(path)
    return path


def _even_rgb_frames(x: np.ndarray) -> np.ndarray:
    """``[C, T, H, W]`` in [-1, 1] -> ``uint8 [T, H', W', 3]`` with even H', W' (edge-padded)."""
    frames = _to_uint8(np.moveaxis(x, 0, -1))  # [C, T, H, W] -> [T, H, W, C]
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    frames = frames[..., :3]
    h, w = frames.shape[1:3]
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _write_video(x: np.ndarray, stem: Path, info: dict) -> Path:
    import fractions

    import av

    frames = _even_rgb_frames(x)
    fps = float(info.get("fps") or 8)
    path = stem.with_suffix(".mp4")
    with av.open(str(path), mode="w") as out:
        try:
            stream = out.add_stream("libx264", rate=fractions.Fraction(fps).limit_denominator(1001))
            stream.options = {"crf": "18", "preset": "veryfast"}
        except Exception:  # noqa: BLE001 - an FFmpeg build without x264
            stream = out.add_stream("mpeg4", rate=fractions.Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _write_audio(x: np.ndarray, stem: Path, info: dict) -> Path:
    """WAV at the source rate and length when ``info`` has them (``source_rate``, ``frames``), with the
    normalisation ``gain`` undone; else as given at ``info["sample_rate"]`` (default 16000)."""
    import soundfile as sf

    rate = int(info.get("sample_rate") or 16000)
    a = np.clip(x, -1, 1).T / float(info.get("gain") or 1.0)  # [C, T] -> [T, C], original level
    out_rate = int(info.get("source_rate") or rate)
    if out_rate != rate and len(a):
        import soxr

        a = soxr.resample(np.ascontiguousarray(a, np.float32), rate, out_rate, quality="HQ")
    if info.get("frames") and info.get("source_rate"):
        n = int(info["frames"])
        a = a[:n] if len(a) >= n else np.concatenate([a, np.zeros((n - len(a), a.shape[1]), a.dtype)])
    path = stem.with_suffix(".wav")
    sf.write(str(path), np.clip(a, -1, 1), out_rate, subtype=_pcm_subtype(info))
    return path


def _pcm_subtype(info: dict) -> str:
    """The source file's subtype when it is one soundfile writes to WAV (PCM_16/24/32, FLOAT), else PCM_16."""
    sub = str(info.get("subtype") or "PCM_16")
    return sub if sub in ("PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE") else "PCM_16"


def _destandardize(x: np.ndarray, info: dict) -> np.ndarray:
    """``[C, T]`` -> ``[T, C]`` in the original units when the item was standardised."""
    a = x.T
    if info.get("standardized", True) and info.get("mean") is not None and info.get("std") is not None:
        mean, std = np.asarray(info["mean"], np.float32), np.asarray(info["std"], np.float32)
        if mean.shape == (a.shape[1],):
            a = a * std + mean
    return a


def _write_series(x: np.ndarray, stem: Path, info: dict) -> Path:
    """CSV with the source's column names when it was a table (``info["source_format"]`` csv/tsv/txt),
    else NPY ``[T, C]``; values de-standardised to the original units; the source's missing values
    (``info["missing"]``) written back missing (NaN)."""
    from ndvq.data.series import restore_missing

    a = restore_missing(_destandardize(x, info), info.get("missing"))
    fmt = str(info.get("source_format") or "")
    if fmt in ("csv", "tsv", "txt"):
        path = stem.with_suffix("." + fmt)
        delim = "\t" if fmt == "tsv" else ","
        cols = list(info.get("columns") or [f"ch{j}" for j in range(a.shape[1])])
        np.savetxt(path, a, delimiter=delim, header=delim.join(cols), comments="", fmt="%.8g")
        return path
    path = stem.with_suffix(".npy")
    np.save(path, a)
    return path


def _write_volume(x: np.ndarray, stem: Path, info: dict) -> Path:
    """NIfTI (``.nii.gz``, the item's affine) or, for an NPY source, NPY in the source's layout (``[D, H, W]`` or
    ``[C, D, H, W]``); the intensity map undone and the values in the source's number type (``info["dtype"]``:
    integers rounded and clipped to its range; default float32)."""
    v = x if info.get("intensity") == "none" else np.clip(x, -1, 1)  # the range the data layer clamped to
    vm = info.get("value_map")
    if vm is not None:
        scale, offset = float(vm[0]), float(vm[1])
        v = (v - offset) / scale
    v = _as_stored(v, info.get("dtype"))
    if info.get("source_format") == "npy":  # [C, D, H, W] as read; a 3-D source without its channel axis
        path = Path(str(stem) + ".npy")
        np.save(path, v[0] if int(info.get("source_ndim", 4)) == 3 and v.shape[0] == 1 else v)
        return path
    import nibabel as nib

    v = v[0] if v.shape[0] == 1 else np.moveaxis(v, 0, -1)  # [C, X, Y, Z] -> [X, Y, Z(, C)]
    affine = np.asarray(info.get("affine", np.eye(4)), np.float64)
    if affine.shape != (4, 4):
        raise DataError(f"info['affine'] must be a 4x4 matrix, got shape {affine.shape}")
    path = Path(str(stem) + ".nii.gz")
    nib.save(nib.Nifti1Image(v, affine), str(path))
    return path


def _as_stored(v: np.ndarray, dtype: str | None) -> np.ndarray:
    """``v`` in the number type ``dtype`` (integers rounded and clipped to its range; None, floats and anything
    unknown: float32, or float64 for a float64 source)."""
    try:
        t = np.dtype(dtype) if dtype else np.dtype("float32")
    except (TypeError, ValueError):
        t = np.dtype("float32")
    if t.kind in "iu":
        lim = np.iinfo(t)
        return np.clip(np.rint(v), lim.min, lim.max).astype(t)
    return v.astype(np.float64 if t == np.float64 else np.float32)


# ------------------------------------------------------------------------------------ samples
def write_samples(modality: str, inputs, recons, out_dir: str | Path, info: dict | None = None,
                  max_items: int = 8) -> list[Path]:
    """Reconstruction samples next to their inputs, to look at (see the module docstring).

    Args:
        modality: ``"image" | "video" | "audio" | "series" | "volume"``.
        inputs: ``[B, C, *S]`` inputs.
        recons: ``[B, C, *S]`` reconstructions (same shape).
        out_dir: folder (created).
        info: ``item_info`` of the first item (fps, sample_rate, affine, ...). Default None.
        max_items: at most this many items are shown. Default 8.
    """
    x, y = _np(inputs), _np(recons)
    _check(modality, x, batched=True)
    if x.shape != y.shape:
        raise DataError(f"inputs {list(x.shape)} and reconstructions {list(y.shape)} differ in shape")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x, y = x[:max_items], y[:max_items]
    info = dict(info or {})
    if modality == "image":
        return [_grid_png(x, y, out / "reconstructions.png")]
    if modality == "video":
        return [_grid_gif(x, y, out / "reconstructions.gif", float(info.get("fps") or 8))]
    if modality == "audio":
        info = {"sample_rate": info.get("sample_rate")}  # windows as the model sees them (no gain / rate undone)
        paths = []
        for b in range(min(len(x), 4)):
            paths += [_write_audio(x[b], out / f"item{b}_input", info), _write_audio(y[b], out / f"item{b}_recon", info)]
        return paths + [_audio_png(x[:4], y[:4], int(info.get("sample_rate") or 16000), out / "waveforms.png")]
    if modality == "series":
        return [_series_png(x[:4], y[:4], out / "series.png", info.get("columns"))]
    paths = []
    vol_info = {"affine": info.get("affine", np.eye(4))}  # samples stay in [-1, 1] (no value_map)
    for b in range(min(len(x), 2)):
        paths += [_write_volume(x[b], out / f"item{b}_input", vol_info), _write_volume(y[b], out / f"item{b}_recon", vol_info)]
    return paths + [_mid_slices_png(x[:4], y[:4], out / "mid_slices.png")]


def _tile(imgs: list[np.ndarray], pad: int = 2) -> np.ndarray:
    """Rows of ``[H, W, C]`` uint8 images -> one image (white gaps)."""
    h, w, c = imgs[0][0].shape
    rows, cols = len(imgs), max(len(r) for r in imgs)
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for i, r in enumerate(imgs):
        for j, im in enumerate(r):
            canvas[pad + i * (h + pad): pad + i * (h + pad) + h, pad + j * (w + pad): pad + j * (w + pad) + w] = im
    return canvas


def _rgb_u8(img_chw: np.ndarray) -> np.ndarray:
    u = _to_uint8(_hwc(img_chw))
    return np.repeat(u, 3, axis=2) if u.shape[2] == 1 else u[:, :, :3]


def _grid_png(x: np.ndarray, y: np.ndarray, path: Path) -> Path:
    from PIL import Image

    canvas = _tile([[_rgb_u8(a) for a in x], [_rgb_u8(b) for b in y]])
    scale = max(1, 128 // x.shape[-2])  # enlarge tiny patches (nearest) so they can be seen
    img = Image.fromarray(canvas)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    img.save(path)
    return path


def _grid_gif(x: np.ndarray, y: np.ndarray, path: Path, fps: float) -> Path:
    from PIL import Image

    frames = []
    for t in range(x.shape[2]):
        canvas = _tile([[_rgb_u8(a[:, t]) for a in x], [_rgb_u8(b[:, t]) for b in y]])
        frames.append(Image.fromarray(canvas))
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=max(int(1000 / max(fps, 1e-3)), 20), loop=0)
    return path


def _figure(rows: int, cols: int, w: float = 3.2, h: float = 2.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(cols * w, rows * h), dpi=90, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _audio_png(x: np.ndarray, y: np.ndarray, rate: int, path: Path) -> Path:
    fig, axes = _figure(len(x), 3)
    for b in range(len(x)):
        a, r = x[b].mean(0), y[b].mean(0)
        t = np.arange(a.size) / rate
        axes[b, 0].plot(t, a, lw=0.6, label="input")
        axes[b, 0].plot(t, r, lw=0.6, alpha=0.8, label="recon")
        axes[b, 0].set_ylim(-1.05, 1.05)
        nfft = int(min(512, 2 ** np.floor(np.log2(max(a.size // 4, 16)))))
        for col, sig, name in ((1, a, "input"), (2, r, "recon")):
            with np.errstate(divide="ignore"):  # silent frames (padding) are log10(0): drawn blank, no warning
                axes[b, col].specgram(sig, NFFT=nfft, Fs=rate, noverlap=nfft // 2, cmap="magma")
            axes[b, col].set_title(f"item {b} {name} spectrogram", fontsize=7)
        axes[b, 0].set_title(f"item {b} waveform", fontsize=7)
    axes[0, 0].legend(fontsize=6)
    fig.savefig(path)
    return path


def _series_png(x: np.ndarray, y: np.ndarray, path: Path, columns=None) -> Path:
    n_ch = min(x.shape[1], 4)
    fig, axes = _figure(len(x), n_ch, w=3.0, h=1.6)
    for b in range(len(x)):
        for c in range(n_ch):
            ax = axes[b, c]
            ax.plot(x[b, c], lw=0.7, label="input")
            ax.plot(y[b, c], lw=0.7, ls="--", label="recon")
            name = columns[c] if columns and c < len(columns) else f"ch{c}"
            ax.set_title(f"item {b} {name}", fontsize=7)
    axes[0, 0].legend(fontsize=6)
    fig.savefig(path)
    return path


def _mid_slices_png(x: np.ndarray, y: np.ndarray, path: Path) -> Path:
    from PIL import Image

    rows = []
    for vol in (x, y):
        row = []
        for v in vol:
            c = v[:1] if v.shape[0] != 3 else v
            for axis in range(3):
                sl = np.take(c, c.shape[axis + 1] // 2, axis=axis + 1)  # [C, a, b]
                row.append(sl)
        rows.append(row)
    h = max(s.shape[1] for r in rows for s in r)
    w = max(s.shape[2] for r in rows for s in r)
    rows = [[_rgb_u8(np.pad(s, ((0, 0), (0, h - s.shape[1]), (0, w - s.shape[2])), constant_values=-1)) for s in r]
            for r in rows]
    img = Image.fromarray(_tile(rows))
    scale = max(1, 96 // max(h, w))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    img.save(path)
    return path
