"""Rate-distortion evaluation of image runs: real ``.ndvq`` file sizes against JPEG and WebP at equal size.

For every image file, ndvq's rate is the size of the ``.ndvq`` file ``compress_files`` writes (header
included): ``bpp = 8 * bytes / pixels``. The file is decoded with ``decompress_files`` and scored
against the original (8-bit RGB, ``data_range=255``): PSNR, SSIM and MS-SSIM (:mod:`ndvq.metrics`).
JPEG and WebP (Pillow, default settings: 4:2:0 chroma for both) are searched over quality 1..95 by
bisection for the file size closest to the ``.ndvq`` file; their own bpp is reported beside it (at
the lowest rates even quality 1 may be larger: the row says so through its bpp). A residual model
gives one row per ``levels`` k (its first k levels). BD-rate (Bjontegaard) compares ndvq's PSNR-rate
curve with each reference's over the PSNR range both cover (PCHIP in log-rate, see :func:`bd_rate`).

The results go to ``RUN/rd.json`` (read by ``ndvq report``) and ``RUN/rd.md``.

Example:
    >>> import numpy as np
    >>> img = (np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8)
    >>> data, q = match_size(img, 3000, "JPEG")
    >>> 1 <= q <= 95 and len(data) > 0
    True
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ndvq import metrics

__all__ = ["FORMATS", "encode_as", "match_size", "quality_scores", "bd_rate", "summarise", "format_rd_table",
           "read_image_rgb", "evaluate_rd", "rd_files", "MS_SSIM_MIN_SIDE"]

#: the reference codecs: Pillow format name -> file suffix
FORMATS = {"JPEG": "jpg", "WEBP": "webp"}
#: the smallest image side at which MS-SSIM uses all five scales (smaller: fewer scales; < 2 scales: None)
MS_SSIM_MIN_SIDE = 176


def rd_files(data: str | Path) -> list[Path]:
    """The image files of ``data`` (a file, or a folder searched recursively), sorted; a one-line
    :class:`~ndvq.errors.DataError` when there are none."""
    from ndvq.data.common import find_files
    from ndvq.data.image import IMAGE_EXTENSIONS
    from ndvq.errors import DataError

    data = Path(data)
    if not data.exists():
        raise DataError(f"--data {str(data)!r} does not exist")
    files = [data] if data.is_file() else find_files(data, IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {str(data)!r}")
    return sorted(files)


def read_image_rgb(path: str | Path) -> np.ndarray:
    """``uint8 [H, W, 3]`` of an image file (gray and RGBA are converted to RGB)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def encode_as(img: np.ndarray, fmt: str, quality: int) -> bytes:
    """The bytes of ``img`` (``uint8 [H, W, 3]``) saved by Pillow as ``fmt`` ("JPEG" | "WEBP") at ``quality``."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, quality=int(quality))
    return buf.getvalue()


def match_size(img: np.ndarray, target_bytes: int, fmt: str, lo: int = 1, hi: int = 95) -> tuple[bytes, int]:
    """``(file bytes, quality)`` of the ``fmt`` file of ``img`` whose size is closest to ``target_bytes``.

    Bisection over the quality ``lo..hi`` (file size grows with quality) finds the largest quality whose
    file is not larger than the target; that one or the next quality, whichever is closer, is returned.

    Args:
        img: ``uint8 [H, W, 3]``.
        target_bytes: the size to match (the ``.ndvq`` file's).
        fmt: "JPEG" or "WEBP".
        lo: lowest quality. Default 1.
        hi: highest quality. Default 95.
    """
    sizes: dict[int, bytes] = {}

    def at(q: int) -> bytes:
        if q not in sizes:
            sizes[q] = encode_as(img, fmt, q)
        return sizes[q]

    a, b = lo, hi
    if len(at(a)) > target_bytes:
        return at(a), a
    while b - a > 1:  # invariant: size(a) <= target; size(b) > target unless b == hi
        mid = (a + b) // 2
        a, b = (mid, b) if len(at(mid)) <= target_bytes else (a, mid)
    best = min((a, b), key=lambda q: (abs(len(at(q)) - target_bytes), q))
    return at(best), best


def decode_bytes(data: bytes) -> np.ndarray:
    """``uint8 [H, W, 3]`` of an in-memory JPEG / WebP / PNG file."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def quality_scores(ref: np.ndarray, rec: np.ndarray, structural: bool = True) -> dict[str, float | None]:
    """PSNR (dB), SSIM and MS-SSIM of ``rec`` against ``ref`` (both ``uint8 [H, W, 3]``; range 255).

    MS-SSIM uses five scales when both sides are >= :data:`MS_SSIM_MIN_SIDE` pixels, fewer (renormalised
    weights) on smaller images, and is None below two scales (see :func:`ndvq.metrics.ms_ssim`) or where
    torchmetrics refuses the size (its rule ``side // (scales - 1)**2 > window - 1`` is stricter, e.g. at
    161..175 pixels for five scales or 81..98 for four). ``structural=False``: PSNR only (no SSIMs)."""
    if ref.shape != rec.shape:
        raise ValueError(f"reconstruction shape {rec.shape} differs from the original's {ref.shape}")
    x = torch.from_numpy(np.array(ref)).permute(2, 0, 1)[None].float()  # [H, W, C] -> [1, C, H, W]
    y = torch.from_numpy(np.array(rec)).permute(2, 0, 1)[None].float()
    psnr = float(metrics.psnr(x, y, data_range=255.0)[0])
    if not structural:
        return {"psnr": psnr}
    try:
        ms = metrics.ms_ssim(x, y, data_range=255.0)
    except ValueError:  # torchmetrics' own size rule is stricter than ndvq.metrics' scale count at some sizes
        ms = None
    ss = metrics.ssim(x, y, data_range=255.0)
    return {"psnr": psnr, "ssim": None if ss is None else float(ss[0]),
            "ms_ssim": None if ms is None else float(ms[0])}


def reference_row(img: np.ndarray, target_bytes: int, fmt: str, structural: bool = True) -> dict:
    """The ``fmt`` file of ``img`` matched to ``target_bytes``: quality, bytes, bpp and its scores
    (``structural``: as in :func:`quality_scores`). Default True."""
    data, q = match_size(img, target_bytes, fmt)
    pixels = img.shape[0] * img.shape[1]
    return {"quality": q, "bytes": len(data), "bpp": 8 * len(data) / pixels,
            **quality_scores(img, decode_bytes(data), structural)}


def _curve(rates: Sequence[float], dists: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Points sorted by distortion (PSNR), duplicates of a PSNR dropped; rates as log10."""
    pts = sorted({float(d): math.log10(float(r)) for r, d in zip(rates, dists) if r > 0}.items())
    return np.array([p[0] for p in pts]), np.array([p[1] for p in pts])


def bd_rate(anchor_rates: Sequence[float], anchor_psnr: Sequence[float], test_rates: Sequence[float],
            test_psnr: Sequence[float]) -> float | None:
    """Bjontegaard delta rate in percent: the test codec's average bitrate change against the anchor at
    equal PSNR (negative: fewer bits), over the PSNR range both curves cover.

    Log10-rate is interpolated as a function of PSNR with a monotone piecewise-cubic (PCHIP) fit per
    curve (as in JCTVC-L0242 / CompressAI's ``bd_rate``; Bjontegaard's original fits a cubic
    polynomial) and integrated over the overlap. None when a curve has fewer than two distinct points
    or the PSNR ranges do not overlap.

    Args:
        anchor_rates: the reference's rates (e.g. JPEG's bpp); any positive unit, the same for both.
        anchor_psnr: the reference's PSNR per point.
        test_rates: the tested codec's rates.
        test_psnr: its PSNR per point.
    """
    from scipy.interpolate import PchipInterpolator

    (da, ra), (dt, rt) = _curve(anchor_rates, anchor_psnr), _curve(test_rates, test_psnr)
    if len(da) < 2 or len(dt) < 2:
        return None
    lo, hi = max(da[0], dt[0]), min(da[-1], dt[-1])
    if hi <= lo:
        return None
    grid = np.linspace(lo, hi, 101)
    mean_a = np.trapezoid(PchipInterpolator(da, ra)(grid), grid) / (hi - lo)
    mean_t = np.trapezoid(PchipInterpolator(dt, rt)(grid), grid) / (hi - lo)
    return float((10 ** (mean_t - mean_a) - 1) * 100)


def _mean(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(vals)) if vals else None


def summarise(rows: list[dict]) -> dict:
    """Per-rate means over the files (one entry per ``levels``) and the BD-rates against each reference.

    ``rows``: one dict per (file, levels) as :func:`ndvq.codec.rd.evaluate_rd` builds them
    (``levels``, ``ndvq``, ``jpeg``, ``webp`` entries). BD-rates are computed per file (each file is a
    curve over its ``levels``) and averaged over the files where they exist."""
    by_k: dict = {}
    for r in rows:
        by_k.setdefault(r["levels"], []).append(r)
    means = []
    for k, rs in sorted(by_k.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
        means.append({"levels": k, "files": len(rs),
                      **{c: {m: _mean([r[c] for r in rs], m) for m in ("bpp", "psnr", "ssim", "ms_ssim")}
                         for c in ("ndvq", "jpeg", "webp")}})
    bd = {}
    for ref in ("jpeg", "webp"):
        per_file = []
        for f in sorted({r["file"] for r in rows}):
            rs = [r for r in rows if r["file"] == f]
            v = bd_rate([r[ref]["bpp"] for r in rs], [r[ref]["psnr"] for r in rs],
                        [r["ndvq"]["bpp"] for r in rs], [r["ndvq"]["psnr"] for r in rs])
            if v is not None:
                per_file.append(v)
        bd[ref] = {"bd_rate_percent": float(np.mean(per_file)) if per_file else None, "files": len(per_file)}
    return {"means": means, "bd_rate": bd}


def _f(v, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def format_rd_table(result: dict) -> str:
    """A Markdown table of ``result`` (:func:`evaluate_rd`'s dict): one row per file and levels, then the
    means per levels and the BD-rates."""
    head = ("| file | levels | ndvq bpp | PSNR | SSIM | MS-SSIM | JPEG q | JPEG bpp | PSNR | MS-SSIM "
            "| WebP q | WebP bpp | PSNR | MS-SSIM |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in result["rows"]:
        n, j, w = r["ndvq"], r["jpeg"], r["webp"]
        lines.append(f"| {r['file']} | {_f(r['levels'], 'd') if r['levels'] else 'all'} | {n['bpp']:.3f} | "
                     f"{n['psnr']:.2f} | {_f(n['ssim'], '.3f')} | {_f(n['ms_ssim'], '.3f')} | {j['quality']} | "
                     f"{j['bpp']:.3f} | {j['psnr']:.2f} | {_f(j['ms_ssim'], '.3f')} | {w['quality']} | "
                     f"{w['bpp']:.3f} | {w['psnr']:.2f} | {_f(w['ms_ssim'], '.3f')} |")
    for m in result["summary"]["means"]:
        n, j, w = m["ndvq"], m["jpeg"], m["webp"]
        lines.append(f"| **mean of {m['files']}** | {m['levels'] or 'all'} | {_f(n['bpp'], '.3f')} | "
                     f"{_f(n['psnr'])} | {_f(n['ssim'], '.3f')} | {_f(n['ms_ssim'], '.3f')} | | "
                     f"{_f(j['bpp'], '.3f')} | {_f(j['psnr'])} | {_f(j['ms_ssim'], '.3f')} | | "
                     f"{_f(w['bpp'], '.3f')} | {_f(w['psnr'])} | {_f(w['ms_ssim'], '.3f')} |")
    bd = result["summary"]["bd_rate"]
    lines.append("")
    lines.append("BD-rate of ndvq (PSNR, PCHIP in log-rate; negative = fewer bits than the reference): "
                 + ", ".join(f"vs {k.upper()} {_f(v['bd_rate_percent'], '+.1f')}% ({v['files']} file(s))"
                             if v["bd_rate_percent"] is not None else
                             f"vs {k.upper()} n/a (no file's PSNR range overlaps ndvq's)" for k, v in bd.items()))
    return "\n".join(lines)


def _levels_of(run) -> list[int | None]:
    """``[1, ..., L]`` for a residual model (one RD point per level count), else ``[None]`` (all codes)."""
    from ndvq.codec.levels import residual_levels
    from ndvq.run.infer import load_run_model

    total = residual_levels(load_run_model(run).model)
    return [None] if total is None else list(range(1, total + 1))


def _rows_at(run, files: list[Path], levels: int | None, work: Path, prior: str) -> list[dict]:
    """One RD row per file at ``levels``: the ``.ndvq`` file's size and scores, and JPEG/WebP matched to it."""
    from ndvq.codec.files import compress_files, decompress_files

    packed = compress_files(run, files, work / "packed", levels=levels, prior=prior)
    decoded = decompress_files(packed, work / "decoded")
    rows = []
    for src, ndvq_file, dec in zip(files, packed, decoded):
        img = read_image_rgb(src)
        rec = read_image_rgb(dec)
        nbytes, pixels = ndvq_file.stat().st_size, img.shape[0] * img.shape[1]
        rows.append({"file": src.name, "levels": levels, "width": img.shape[1], "height": img.shape[0],
                     "ndvq": {"bytes": nbytes, "bpp": 8 * nbytes / pixels, **quality_scores(img, rec)},
                     **{fmt.lower(): reference_row(img, nbytes, fmt) for fmt in FORMATS}})
    return rows


def evaluate_rd(run, data, levels: Sequence[int] | None = None, out: str | Path | None = None,
                prior: str = "auto") -> dict:
    """Rate-distortion table of a run on the image files of ``data`` (see the module docstring).

    Args:
        run: run directory or checkpoint (a model with discrete codes).
        data: an image file or a folder of them (searched recursively).
        levels: the level counts to evaluate (residual models). Default None: every ``1..L`` of a residual
            model, all codes otherwise.
        out: the JSON file. Default None: ``RUN/rd.json`` (``ndvq report`` plots it); the Markdown table
            goes beside it (``.md``).
        prior: the probability model for the ``.ndvq`` files (``"auto" | "prior" | "none"``, see
            :func:`ndvq.codec.compress_files`). Default ``"auto"``.

    Returns:
        ``{"run", "data", "files", "prior", "references", "bd_method", "rows", "summary"}``; ``rows`` hold one
        dict per file and level count with ``ndvq``/``jpeg``/``webp`` entries (``bytes``, ``bpp``, ``psnr``,
        ``ssim``, ``ms_ssim``; ``quality`` for the references).
    """
    import tempfile

    import PIL

    from ndvq.run.infer import load_run_model

    files = rd_files(data)
    run_dir = load_run_model(run).run_dir
    ks = list(levels) if levels else _levels_of(run)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ndvq-rd-") as tmp:
        for k in ks:
            rows.extend(_rows_at(run, files, k, Path(tmp) / f"levels-{k}", prior))
    result = {"run": str(run_dir), "data": str(data), "files": [f.name for f in files], "prior": prior,
              "references": f"Pillow {PIL.__version__} JPEG and WebP (default settings), quality 1..95 "
                            "bisected to the .ndvq file's size",
              "bd_method": "Bjontegaard delta rate, PCHIP of log10(bpp) over PSNR, over the PSNR range both cover",
              "rows": rows, "summary": summarise(rows)}
    js = Path(out) if out is not None else Path(run_dir) / "rd.json"
    js.parent.mkdir(parents=True, exist_ok=True)
    js.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    js.with_suffix(".md").write_text(format_rd_table(result) + "\n", encoding="utf-8")
    result["written"] = [str(js), str(js.with_suffix(".md"))]
    return result
