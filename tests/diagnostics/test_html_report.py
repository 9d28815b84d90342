"""The HTML report: self-contained, renders in headless Chromium with no console errors."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from diag_synthetic import add_code_usage, add_samples, scenario, write_run

from ndvq.diagnostics.codeusage import code_usage, usage_summary
from ndvq.diagnostics.report import build_report, load_run, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    a = write_run(root, "healthy", *scenario("healthy"))
    add_samples(a, "image")
    add_code_usage(a, used=200)
    b = write_run(root, "collapse", *scenario("collapse"))
    add_samples(b, "audio")
    add_code_usage(b, used=3)
    c = write_run(root, "video", *scenario("overfitting"))
    add_samples(c, "video")
    d = write_run(root, "kl", *scenario("kl_blurry"))
    add_samples(d, "volume")
    return [a, b, c, d]


def _no_external_refs(text: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text), "report must not load anything from the network"
    assert "<script src" not in text and "<link " not in text


def test_single_run_report_sections(runs):
    out = write_report([runs[0]], encode=False)
    assert out == runs[0] / "report.html"
    text = out.read_text()
    _no_external_refs(text)
    for section in ("summary", "doctor", "curves", "codes", "samples", "config"):
        assert f'id="{section}"' in text
    assert text.count("<svg") >= 6  # loss, recon, commitment, perplexity, usage, dead codes, psnr, lr, histogram
    assert "data:image/png;base64," in text
    assert "Looks healthy" in text and "n_codes: 512" in text
    assert "200 of 512 codes used" in text


def test_modalities_embedded(runs):
    text = build_report([load_run(r, encode=False) for r in runs])
    assert "<audio controls" in text and "data:audio/wav;base64," in text
    assert "data:image/gif;base64," in text
    assert "recon_0.nii.gz (kept on disk)" in text
    assert "Differences" in text and "model.kind" in text  # klvae vs vqvae differ
    assert "Codebook collapse" in text and "Overfitting" in text and "Blurry reconstructions" in text


def test_no_checkpoint_no_cache_says_why(runs):
    data, note = code_usage(runs[2], encode=False)
    assert data is None and "no checkpoint" in note
    text = build_report([load_run(runs[2], encode=False)])
    assert "no checkpoint in the run folder yet" in text


def test_usage_summary_numbers():
    data = {"kind": "codes", "n_codes": [8], "counts": [[[4, 4, 0, 0, 0, 0, 0, 0]]]}
    assert usage_summary(data) == "2 of 8 codes used (25%), perplexity 2"


def test_report_of_running_run_with_truncated_line(tmp_path):
    records, config = scenario("healthy")
    run = write_run(tmp_path, "live", records[:60], config, truncate_last=True)
    text = build_report([load_run(run, encode=False)])
    assert "No samples written yet" in text


def test_report_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        write_report([tmp_path / "missing"])
    with pytest.raises(ValueError, match="at least one"):
        write_report([])


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium); "
                    "scripts/setup.sh --test installs it")
def test_report_in_headless_chromium(runs, tmp_path):
    from playwright.sync_api import sync_playwright

    out = write_report(runs, tmp_path / "compare.html", encode=False)
    errors, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
            page.goto(out.as_uri())
            page.wait_for_load_state("load")
            svgs = page.evaluate("""Array.from(document.querySelectorAll('.plot svg')).map(s => {
                const r = s.getBoundingClientRect(); return [r.width, r.height, s.querySelectorAll('path').length]; })""")
            imgs = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
            page.wait_for_function("Array.from(document.querySelectorAll('audio')).every(a => a.readyState >= 1)", timeout=10000)
            audio = page.evaluate("Array.from(document.querySelectorAll('audio')).map(a => a.duration)")
        finally:
            browser.close()
    assert errors == []
    assert requests == []
    assert len(svgs) >= 8 and all(w > 100 and h > 100 and n > 5 for w, h, n in svgs), svgs
    assert len(imgs) >= 4 and all(ok and w > 0 and h > 0 for ok, w, h in imgs), imgs
    assert len(audio) == 2 and all(abs(d - 1.0) < 0.05 for d in audio), audio
