"""Real files with the properties that broke the data layer, written on the fly (used by the fidelity
tests and ``benchmarks/fidelity.py``): short 8 kHz spoken-word-like clips, one video, CSV series with
1 and 5 columns, odd-sized NIfTI volumes, float TIFFs in the medical layout, a symlink loop."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def speech_clips(folder: Path, n: int = 8, rate: int = 8000, seconds=(0.3, 0.7), long_seconds: float = 0.0,
                 seed: int = 0) -> list[Path]:
    """``n`` 16-bit WAV clips of ``seconds`` (uniform) at ``rate``: voiced harmonics under a syllable
    envelope, with leading/trailing silence, peak well below full scale; plus one ``long_seconds`` file."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lengths = list(rng.uniform(*seconds, size=n)) + ([long_seconds] if long_seconds else [])
    out = []
    for i, sec in enumerate(lengths):
        t = np.arange(int(sec * rate)) / rate
        f0 = rng.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * 3 * t))
        phase = 2 * np.pi * np.cumsum(f0) / rate
        voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
        env = np.clip(np.sin(np.pi * t / t[-1]) * 1.4 - 0.2, 0, None) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
        sig = 0.25 * env * voiced + 0.002 * rng.standard_normal(t.size)
        path = folder / f"word_{i:02d}.wav"
        sf.write(str(path), sig.astype(np.float32), rate, subtype="PCM_16")
        out.append(path)
    return out


def one_video(folder: Path, n_frames: int = 24, h: int = 24, w: int = 32, fps: int = 12) -> Path:
    """One MP4 (MPEG-4 part 2, high quality) of a moving, smoothly coloured pattern."""
    import av

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "clip.mp4"
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(path), mode="w") as out:
        s = out.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"qscale": "1"}
        for t in range(n_frames):
            r = 128 + 100 * np.sin((xx + 2 * t) / 6)
            g = 128 + 100 * np.cos((yy - t) / 5)
            b = np.full_like(r, 40 + 6 * t)
            frame = np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


_COLUMNS = ["co2_ppm", "temp_c", "humidity", "pressure_hpa", "wind_ms"]


def mixed_csvs(folder: Path, n5: int = 5, rows=(203, 260), seed: int = 0) -> list[Path]:
    """``n5`` CSV files with a date column and 5 numeric columns (different units), plus one with a
    single ``gdp_usd_bn`` column (the odd one out)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    scale = np.array([410.0, 15.0, 60.0, 1013.0, 4.0])
    for i in range(n5):
        n = int(rng.integers(*rows))
        t = np.arange(n)
        a = scale * (1 + 0.05 * np.sin(t[:, None] / (8 + 3 * np.arange(5)))) + rng.normal(0, 0.3, (n, 5))
        path = folder / f"station_{i}.csv"
        lines = ["date," + ",".join(_COLUMNS)] + [f"2020-01-{(j % 28) + 1:02d}," + ",".join(f"{v:.4f}" for v in r)
                                                  for j, r in enumerate(a)]
        path.write_text("\n".join(lines) + "\n")
        out.append(path)
    gdp = folder / "gdp.csv"
    gdp.write_text("year,gdp_usd_bn\n" + "\n".join(f"{1990 + j},{20000 + 350 * j:.1f}" for j in range(34)) + "\n")
    return out + [gdp]


def odd_niftis(folder: Path, n: int = 3, shape=(33, 41, 25), seed: int = 0) -> list[Path]:
    """``n`` MRI-like NIfTI volumes of an odd ``shape`` with a non-trivial affine (float32)."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    aff = np.array([[0.9, 0, 0, -14.0], [0, 1.1, 0, 20.0], [0, 0, 2.0, -7.5], [0, 0, 0, 1]])
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    out = []
    for i in range(n):
        r = np.sqrt((grid**2).sum(0))
        v = 800 * np.exp(-(r / (0.6 + 0.05 * i)) ** 2) + 100 * grid[0] + rng.normal(0, 5, shape)
        path = folder / f"sub-{i:02d}_anat.nii.gz"
        nib.save(nib.Nifti1Image(v.astype(np.float32), aff), str(path))
        out.append(path)
    return out


def medical_tiffs(base: Path, n: int = 4, size: int = 64, seed: int = 0) -> list[Path]:
    """Float32 TIFFs of ``size`` x ``size`` in the medical layout (``base/dente``, ``base/edente``)."""
    import tifffile

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for i in range(n):
        sub = base / ("dente" if i % 2 else "edente")
        sub.mkdir(parents=True, exist_ok=True)
        img = 0.5 + 0.4 * np.sin(6 * xx + i) * np.cos(5 * yy) + rng.normal(0, 0.01, (size, size))
        path = sub / f"scan_{i}.tif"
        tifffile.imwrite(path, img.astype(np.float32))
        out.append(path)
    return out


def symlink_loop(folder: Path, n: int = 3) -> list[Path]:
    """``n`` PNGs and a sub-folder symlink pointing back at ``folder`` (a loop)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        path = folder / f"img_{i}.png"
        Image.fromarray(((np.indices((20, 24)).sum(0) * (3 + i)) % 256).astype(np.uint8)).save(path)
        out.append(path)
    os.symlink(folder.resolve(), folder / "loop")
    return out
