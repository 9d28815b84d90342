"""The end of the default ``ndvq train``: compress a photograph the run never saw and compare with JPEG.

:func:`demo_callback` gives the training loop's ``on_finish`` hook (rank 0, after the last checkpoint) a
step that compresses a full-resolution built-in photograph the default run does not train or validate
on (scikit-image's ``stereo_motorcycle`` left view, 741x500; the default trains on six other
scikit-image photographs and validates on ``chelsea``) to a real ``.ndvq`` file, decodes it, saves the
same photograph as a JPEG of (as nearly as the quality steps allow) the same size, and writes ONE PNG
into the run directory: original | ndvq | JPEG, each labelled with its bpp and PSNR. Two lines go to
the console. Any failure is a one-line warning: the demo never fails the run.

Example:
    >>> hook = demo_callback(cfg)            # doctest: +SKIP  (None for a run without codes)
    >>> train(cfg, on_finish=hook)           # doctest: +SKIP
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["demo_photo", "compression_demo", "demo_callback", "DEMO_PNG"]

#: the file the demo writes into the run directory
DEMO_PNG = "compression_demo.png"


def demo_photo() -> tuple[str, np.ndarray]:
    """``(name, uint8 [H, W, 3])``: the built-in photograph the default run never sees."""
    import skimage.data

    return "motorcycle", np.ascontiguousarray(skimage.data.stereo_motorcycle()[0][:, :, :3])


def _label(img: np.ndarray, text: str) -> np.ndarray:
    """``img`` with a white text strip (Pillow's default font) above it."""
    from PIL import Image, ImageDraw

    strip = Image.new("RGB", (img.shape[1], 22), "white")
    ImageDraw.Draw(strip).text((4, 5), text, fill="black")
    return np.concatenate([np.asarray(strip), img], axis=0)


def compression_demo(run_dir: str | Path, photo: tuple[str, np.ndarray] | None = None) -> dict:
    """Compress ``photo`` (default :func:`demo_photo`) with the run, match a JPEG to the file size, write
    ``RUN/compression_demo.png`` (original | ndvq | JPEG) and return the figures.

    Args:
        run_dir: a finished run (image model with discrete codes).
        photo: ``(name, uint8 [H, W, 3])``. Default None: :func:`demo_photo`.

    Returns:
        ``{"photo", "width", "height", "png", "ndvq": {"bytes", "bpp", "psnr"}, "jpeg": {..., "quality"}}``
        (PSNR only: the SSIMs are left to ``ndvq eval --rd``).
    """
    from PIL import Image

    from ndvq.codec.files import compress_files, decompress_files
    from ndvq.codec.rd import decode_bytes, encode_as, quality_scores, read_image_rgb, reference_row

    name, img = photo if photo is not None else demo_photo()
    pixels = img.shape[0] * img.shape[1]
    with tempfile.TemporaryDirectory(prefix="ndvq-demo-") as tmp:
        src = Path(tmp) / f"{name}.png"
        Image.fromarray(img).save(src)
        packed = compress_files(run_dir, [src], Path(tmp) / "packed")[0]
        rec = read_image_rgb(decompress_files([packed], Path(tmp) / "decoded")[0])
        nbytes = packed.stat().st_size
    ndvq = {"bytes": nbytes, "bpp": 8 * nbytes / pixels, **quality_scores(img, rec, structural=False)}
    jpeg = reference_row(img, nbytes, "JPEG", structural=False)
    jpg = decode_bytes(encode_as(img, "JPEG", jpeg["quality"]))
    panels = [_label(img, f"original {name} {img.shape[1]}x{img.shape[0]}"),
              _label(rec, f"ndvq {ndvq['bpp']:.3f} bpp  PSNR {ndvq['psnr']:.2f} dB"),
              _label(jpg, f"JPEG q{jpeg['quality']} {jpeg['bpp']:.3f} bpp  PSNR {jpeg['psnr']:.2f} dB")]
    gap = np.full((panels[0].shape[0], 6, 3), 255, np.uint8)
    out = Path(run_dir) / DEMO_PNG
    Image.fromarray(np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)).save(out)
    return {"photo": name, "width": img.shape[1], "height": img.shape[0], "png": str(out), "ndvq": ndvq, "jpeg": jpeg}


def demo_lines(res: dict) -> list[str]:
    """The console lines of a :func:`compression_demo` result."""
    n, j = res["ndvq"], res["jpeg"]
    return [f"  compression  {res['photo']} {res['width']}x{res['height']} (a photograph the run never saw): "
            f"ndvq {n['bpp']:.3f} bpp, PSNR {n['psnr']:.2f} dB  |  JPEG (q{j['quality']}) {j['bpp']:.3f} bpp, "
            f"PSNR {j['psnr']:.2f} dB",
            f"  demo         {res['png']} (original | ndvq | JPEG at the same file size"
            + (f"; {res['seconds']:.1f} s)" if "seconds" in res else ")")]


class _Demo:
    """``on_finish`` step: run :func:`compression_demo` on the finished run, print its lines; warn on failure."""

    def __call__(self, records: list[dict], run_dir: Path) -> list:
        try:
            t0 = time.perf_counter()
            res = compression_demo(run_dir)
            res["seconds"] = time.perf_counter() - t0
            (Path(run_dir) / "compression_demo.json").write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
            print("\n".join(demo_lines(res)), flush=True)
        except Exception as e:  # the demo must never fail a finished run
            print(f"ndvq: warning: compression demo skipped: {' '.join(str(e).split()) or type(e).__name__}",
                  file=sys.stderr, flush=True)
        return []


def demo_callback(cfg) -> _Demo | None:
    """The demo step for ``cfg`` (a :class:`ndvq.config.Config`), or None when it does not apply: only runs
    on the built-in sample photographs (the default run) with discrete codes. Image-folder runs get the
    same comparison, on their own files, from ``ndvq eval RUN --data DIR --rd``.

    Args:
        cfg: the run's config.
    """
    m = cfg.model
    if m.bottleneck == "gaussian" or m.n_dims != 2 or cfg.data.kind != "samples":
        return None
    return _Demo()
