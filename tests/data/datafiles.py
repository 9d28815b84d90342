"""Small real files of every format, written on the fly (Pillow, tifffile, PyAV, soundfile, nibabel, numpy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth uint8 RGB test picture (gradients + a seeded offset)."""
    yy, xx = np.mgrid[0:h, 0:w]
    r = (xx * 255 // max(w - 1, 1) + seed * 17) % 256
    g = (yy * 255 // max(h - 1, 1) + seed * 31) % 256
    b = ((xx + yy) * 3 + seed * 7) % 256
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def write_png(path: Path, h: int = 20, w: int = 24, mode: str = "RGB", seed: int = 0) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(rgb(h, w, seed))
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path)
    return path


def write_video(path: Path, n_frames: int = 20, h: int = 16, w: int = 16, fps: int = 10) -> Path:
    """An MP4/MKV/AVI whose frame t has mean brightness ~ 10 * t (to check which frames come back)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as out:
        s = out.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"qscale": "2"}
        s.gop_size = 5
        for t in range(n_frames):
            frame = np.full((h, w, 3), min(10 * t + 5, 255), np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def write_audio(path: Path, seconds: float = 1.0, rate: int = 8000, channels: int = 1, amp: float = 0.5) -> Path:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sig = np.stack([amp * np.sin(2 * np.pi * 440 * (c + 1) * t) for c in range(channels)], axis=1)
    sf.write(str(path), sig.astype(np.float32), rate)
    return path


def write_nifti(path: Path, shape=(12, 10, 8), affine=None, seed: int = 0) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    v = rng.normal(100, 20, size=shape).astype(np.float32)
    aff = np.diag([0.5, 0.7, 1.2, 1.0]) if affine is None else affine
    aff = np.array(aff, np.float64)
    nib.save(nib.Nifti1Image(v, aff), str(path))
    return path


def corrupt(path: Path) -> Path:
    """A file with the right extension and garbage inside."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a real file" * 10)
    return path
