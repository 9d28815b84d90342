"""RD evaluation (ndvq.codec.rd), the report's RD section and the default run's compression demo."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ndvq.codec import rd


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    import skimage.data

    return np.ascontiguousarray(skimage.data.chelsea()[100:164, 150:246])  # a 64x96 real crop


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_match_size_finds_the_closest_quality(photo, fmt):
    sizes = {q: len(rd.encode_as(photo, fmt, q)) for q in range(1, 96)}
    target = (sizes[20] + sizes[60]) // 2
    data, q = rd.match_size(photo, target, fmt)
    assert len(data) == sizes[q]
    best = min(abs(s - target) for s in sizes.values())
    # bisection assumes size grows with quality; on a real image it must land on (or next to) the optimum
    assert abs(sizes[q] - target) <= max(best, 1) * 1.5 + 16, (q, sizes[q], target, best)
    for nb in (q - 1, q + 1):
        if nb in sizes and fmt == "JPEG":
            assert abs(sizes[q] - target) <= abs(sizes[nb] - target)


def test_match_size_below_the_smallest_file_gives_quality_1(photo):
    data, q = rd.match_size(photo, 10, "JPEG")
    assert q == 1 and len(data) == len(rd.encode_as(photo, "JPEG", 1))
    row = rd.reference_row(photo, 10, "JPEG")
    assert row["quality"] == 1 and row["bpp"] == pytest.approx(8 * row["bytes"] / (64 * 96))


def test_quality_scores_small_image_has_no_ms_ssim(photo):
    s = rd.quality_scores(photo, photo)
    assert s["psnr"] > 100 and s["ssim"] == pytest.approx(1.0, abs=1e-4)
    assert s["ms_ssim"] == pytest.approx(1.0, abs=1e-4)  # 64 px: fewer scales, still defined
    tiny = photo[:4, :4]
    assert rd.quality_scores(tiny, tiny)["ms_ssim"] is None  # fewer than two scales fit


def test_bd_rate_known_answer():
    psnr = [26.0, 28.0, 30.0, 32.0]
    anchor = [0.2, 0.35, 0.6, 1.0]
    assert rd.bd_rate(anchor, psnr, [0.8 * r for r in anchor], psnr) == pytest.approx(-20.0, abs=1e-6)
    assert rd.bd_rate(anchor, psnr, [1.5 * r for r in anchor], psnr) == pytest.approx(50.0, abs=1e-6)
    # only the overlap counts: log-rate linear in PSNR (PCHIP reproduces lines exactly); a test curve over
    # 28..34 dB at half the anchor's rate is -50% on the shared 28..32 dB (its 34 dB point is outside)
    line = [0.1 * 10 ** ((p - 26) / 10) for p in psnr]
    test_psnr = [28.0, 30.0, 32.0, 34.0]
    test = [0.5 * 0.1 * 10 ** ((p - 26) / 10) for p in test_psnr]
    assert rd.bd_rate(line, psnr, test, test_psnr) == pytest.approx(-50.0, abs=1e-6)
    assert rd.bd_rate(anchor, psnr, [0.1, 0.2], [10.0, 12.0]) is None  # no overlap
    assert rd.bd_rate(anchor, psnr, [0.1], [27.0]) is None  # one point is no curve


@pytest.fixture(scope="module")
def rd_result(runs, tmp_path_factory):
    run = runs("residual")
    return run, rd.evaluate_rd(run.run_dir, run.test_dir)


def test_rd_table_fields(rd_result):
    run, res = rd_result
    assert len(res["rows"]) == len(run.files) * 3  # one row per file and level count 1..3
    assert sorted({r["levels"] for r in res["rows"]}) == [1, 2, 3]
    for r in res["rows"]:
        pixels = r["width"] * r["height"]
        for codec in ("ndvq", "jpeg", "webp"):
            e = r[codec]
            assert e["bpp"] == pytest.approx(8 * e["bytes"] / pixels)
            assert np.isfinite(e["psnr"]) and e["ssim"] is not None
        assert 1 <= r["jpeg"]["quality"] <= 95 and 1 <= r["webp"]["quality"] <= 95
    by_file = {}
    for r in res["rows"]:
        by_file.setdefault(r["file"], []).append(r["ndvq"]["bytes"])
    assert all(b == sorted(b) and b[0] < b[-1] for b in by_file.values())  # more levels, bigger files
    saved = json.loads((run.run_dir / "rd.json").read_text())
    assert saved["rows"] == res["rows"] and set(saved["summary"]["bd_rate"]) == {"jpeg", "webp"}
    table = (run.run_dir / "rd.md").read_text()
    assert "BD-rate" in table and table.count("\n") >= len(res["rows"]) + 2


def test_eval_rd_cli(rd_result, capsys):
    from ndvq.cli import main

    run, _ = rd_result
    assert main(["eval", str(run.run_dir), "--data", str(run.files[0]), "--rd", "--out",
                 str(run.run_dir / "rd-one.json")]) == 0
    out = capsys.readouterr().out
    assert "JPEG q" in out and "rd-one.json" in out
    assert len(json.loads((run.run_dir / "rd-one.json").read_text())["rows"]) == 3
    assert main(["eval", str(run.run_dir), "--rd"]) == 2  # --rd needs --data


def test_report_plots_rd_curves(rd_result, tmp_path):
    from ndvq.diagnostics.report import write_report

    run, _ = rd_result
    html = write_report([run.run_dir], tmp_path / "r.html", encode=False).read_text()
    assert "id='rd'" in html and "Rate-distortion" in html and "BD-rate" in html
    (run.run_dir / "rd.json").rename(run.run_dir / "rd.json.off")
    try:
        html = write_report([run.run_dir], tmp_path / "r2.html", encode=False).read_text()
        assert "id='rd'" not in html
    finally:
        (run.run_dir / "rd.json.off").rename(run.run_dir / "rd.json")


def test_demo_png_for_a_tiny_run(runs):
    from PIL import Image

    from ndvq.codec.demo import DEMO_PNG, compression_demo, demo_photo

    run = runs("image")
    name, img = demo_photo()
    small = (name, img[:96, :160])  # the same photograph, cropped to keep the test fast
    res = compression_demo(run.run_dir, small)
    png = run.run_dir / DEMO_PNG
    assert res["png"] == str(png) and png.is_file()
    w, h = Image.open(png).size
    assert w == 3 * 160 + 2 * 6 and h == 96 + 22
    assert res["ndvq"]["bpp"] == pytest.approx(8 * res["ndvq"]["bytes"] / (96 * 160))
    assert res["jpeg"]["quality"] >= 1 and np.isfinite(res["jpeg"]["psnr"]) and np.isfinite(res["ndvq"]["psnr"])
    assert "ms_ssim" not in res["ndvq"]  # PSNR only at the end of training


def test_demo_callback_applies_to_sample_runs_only_and_never_raises(tmp_path, capsys):
    from ndvq.codec.demo import demo_callback
    from ndvq.config import load_config

    assert demo_callback(load_config(None, [])) is not None  # the built-in default
    assert demo_callback(load_config(None, ["model.kind=klvae"])) is None  # no codes
    assert demo_callback(load_config(None, ["data.kind=image", f"data.root={tmp_path}"])) is None
    hook = demo_callback(load_config(None, [f"run.root={tmp_path}"]))
    assert hook([], tmp_path / "no-run") == []  # not a run: a warning, not an error
    assert "compression demo skipped" in capsys.readouterr().err
    import pickle

    pickle.dumps(hook)  # DDP (spawn) pickles the hooks


def test_rd_table_says_when_a_bd_rate_has_no_overlap():
    """A BD-rate without an overlapping PSNR range reads 'n/a', never a bare '-%'."""
    from ndvq.codec.rd import format_rd_table

    result = {"rows": [], "summary": {"means": [], "bd_rate": {"jpeg": {"bd_rate_percent": -12.34, "files": 2},
                                                            "webp": {"bd_rate_percent": None, "files": 0}}}}
    line = format_rd_table(result).splitlines()[-1]
    assert "vs JPEG -12.3% (2 file(s))" in line and "vs WEBP n/a" in line and "-%" not in line
