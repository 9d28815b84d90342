"""``ndvq report``: one self-contained HTML page per run (or several runs overlaid).

Everything is inline (plots as inline SVG from matplotlib, sample images/GIFs as base64
``<img>``, audio as base64 ``<audio>``), so the file opens offline, from an e-mail or a
shared drive, with no server and no CDN. Sections: summary table, the doctor's findings,
loss curves (total, reconstruction, commitment / KL), perplexity and code usage over time,
learning rate / PSNR / dead codes, the code-usage histogram over the validation split (see
:mod:`ndvq.diagnostics.codeusage`), reconstruction samples next to their inputs and the
resolved config (with the differences between runs first).

Example:
    >>> from ndvq.diagnostics.report import write_report
    >>> write_report(["runs/a", "runs/b"], "compare.html")   # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ndvq.config import flatten_keys
from ndvq.diagnostics.codeusage import code_usage, usage_summary
from ndvq.diagnostics.doctor import diagnose, read_errors, run_facts
from ndvq.diagnostics.rules import Finding, RunView, Series, Thresholds, fmt_num
from ndvq.run.rundir import check_run_dir, metrics_path, read_config, read_metrics, samples_dir

__all__ = ["RunData", "load_run", "build_report", "write_report"]

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]
_MAX_POINTS = 1500
_MAX_FILE = 4 * 2**20  # bytes of one embedded sample file
_MAX_SAMPLES = 24 * 2**20  # bytes of all embedded samples of one run
_SAMPLE_DIR = re.compile(r"step(\d+)$")


@dataclass
class RunData:
    """One run as the report sees it (``facts``: its model's facts, :func:`ndvq.diagnostics.doctor.run_facts`)."""

    path: Path
    name: str
    config: dict
    facts: dict
    records: list[dict]
    findings: list[Finding]
    train: Series
    val: Series
    usage: dict | None = None
    usage_note: str = ""
    samples: list[Path] = field(default_factory=list)
    samples_step: int | None = None
    rd: dict | None = None  # RUN/rd.json (``ndvq eval --rd``), when present


def load_run(run_dir: str | Path, encode: bool = True, max_items: int = 256) -> RunData:
    """Read a run folder (metrics, config, findings, code usage, latest samples)."""
    p = check_run_dir(run_dir)
    records = read_metrics(metrics_path(p))
    config = read_config(p)
    facts = run_facts(p, config)
    findings = diagnose(records + read_errors(sorted(p.glob("*.log"))), config, facts=facts)
    usage, note = code_usage(p, max_items=max_items, encode=encode)
    steps = sorted((d for d in samples_dir(p).glob("step*") if d.is_dir() and _SAMPLE_DIR.search(d.name)),
                   key=lambda d: int(_SAMPLE_DIR.search(d.name).group(1)))
    samples, sstep = [], None
    if steps:
        samples = sorted(f for f in steps[-1].rglob("*") if f.is_file())
        sstep = int(_SAMPLE_DIR.search(steps[-1].name).group(1))
    name = (config.get("run") or {}).get("name") or p.name
    return RunData(p, str(name), config, facts, records, findings,
                   Series.from_records([r for r in records if r.get("split", "train") == "train"]),
                   Series.from_records([r for r in records if r.get("split") == "val"]),
                   usage, note, samples, sstep, _read_rd(p))


def _read_rd(run_dir: Path) -> dict | None:
    """``RUN/rd.json`` as written by ``ndvq eval --rd`` (None when absent or unreadable)."""
    try:
        rd = json.loads((run_dir / "rd.json").read_text(encoding="utf-8"))
        return rd if isinstance(rd, dict) and isinstance(rd.get("summary"), dict) else None
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- plots


def _svg(fig, salt: str) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    with plt.rc_context({"svg.hashsalt": salt, "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog/doctype: inline SVG in HTML


def _thin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= _MAX_POINTS:
        return x, y
    idx = np.linspace(0, len(x) - 1, _MAX_POINTS).round().astype(int)
    return x[idx], y[idx]


def _ema(y: np.ndarray, n: int) -> np.ndarray:
    a = 2.0 / (max(2, n // 30) + 1)
    out = np.empty_like(y)
    acc = y[0]
    for i, v in enumerate(y):
        acc = a * v + (1 - a) * acc
        out[i] = acc
    return out


def _figure(w: float = 5.6, h: float = 3.2):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(w, h), dpi=100)
    ax.grid(True, alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def _curve_plot(runs: Sequence[RunData], names: Sequence[str], title: str, ylabel: str, salt: str,
                log: bool = False, splits: Sequence[str] = ("train", "val"), scale: float = 1.0,
                hlines: dict[int, float] | None = None) -> str | None:
    """Train (raw faint + smoothed) and val (dashed, markers) curves of the first of ``names`` each run has."""
    fig, ax = _figure()
    drawn = False
    for i, run in enumerate(runs):
        color = _COLORS[i % len(_COLORS)]
        label = run.name if len(runs) > 1 else ""
        for split in splits:
            s = run.train if split == "train" else run.val
            name = next((n for n in names if s.has(n)), None)
            if name is None:
                continue
            x, y = s.get(name)
            y = y * scale
            if log and (y <= 0).all():
                continue
            x, y = _thin(x, y)
            tag = f"{label} {split}".strip()
            if split == "train":
                if len(y) > 20:
                    ax.plot(x, y, color=color, alpha=0.2, lw=0.8)
                    ax.plot(x, _ema(y, len(y)), color=color, lw=1.6, label=tag)
                else:
                    ax.plot(x, y, color=color, lw=1.6, label=tag)
            else:
                ax.plot(x, y, color=color, lw=1.4, ls="--", marker="o", ms=3, label=tag)
            drawn = True
        if hlines and i in hlines:
            ax.axhline(hlines[i] * scale, color=color, lw=0.8, ls=":", alpha=0.8)
    if not drawn:
        import matplotlib.pyplot as plt

        plt.close(fig)
        return None
    if log:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=11)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, frameon=False)
    return _svg(fig, salt)


def _usage_hist_plot(runs: Sequence[RunData], salt: str) -> str | None:
    """Rank-frequency of code usage on the val split (one line per run and level), or KL latent histogram."""
    have = [(i, r) for i, r in enumerate(runs) if r.usage]
    if not have:
        return None
    fig, ax = _figure(w=11.4, h=3.4)
    latent = all(r.usage["kind"] == "latent" for _, r in have)
    for i, r in have:
        color, u = _COLORS[i % len(_COLORS)], r.usage
        if u["kind"] == "latent":
            edges = np.asarray(u["edges"])
            ax.stairs(u["hist"], edges, color=color, fill=len(have) == 1, alpha=0.6, label=r.name)
            continue
        for lv, lc in enumerate(u["counts"]):
            c = np.asarray(lc, dtype=float).sum(0)
            tag = (r.name if len(runs) > 1 else "") + (f" level {lv}" if len(u["counts"]) > 1 else "")
            if len(runs) == 1 and len(u["counts"]) == 1:
                ax.stairs(c, np.arange(len(c) + 1) - 0.5, fill=True, color=color, label=tag.strip() or None)
            else:  # rank-frequency, one path per run and level (thinned for large codebooks)
                srt = np.sort(c[c > 0])[::-1]  # used codes only: where the line ends is how many were used
                x, y = _thin(np.arange(1, len(srt) + 1), srt)
                ax.plot(x, y, color=color, lw=1.5, ls=["-", "--", ":"][lv % 3], label=f"{tag.strip()} ({len(srt)} of {len(c)} used)")
                ax.axvline(len(c), color=color, lw=0.8, ls=":", alpha=0.7)
    if latent:
        ax.set_title("Latent means on the val split", fontsize=11)
        ax.set_xlabel("value")
        ax.set_ylabel("count")
    elif len(runs) == 1 and len(have[0][1].usage["counts"]) == 1:
        ax.set_title("Code usage on the val split (per code index)", fontsize=11)
        ax.set_xlabel("code index")
        ax.set_ylabel("count")
    else:
        ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_title("Code usage on the val split (used codes sorted by frequency; dotted: n_codes)", fontsize=11)
        ax.set_xlabel("rank")
        ax.set_ylabel("count")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, frameon=False)
    return _svg(fig, salt)


# ----------------------------------------------------------------------------- html pieces


def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


_MIME = {".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
         ".svg": "image/svg+xml", ".webp": "image/webp", ".wav": "audio/wav", ".mp3": "audio/mpeg",
         ".ogg": "audio/ogg", ".flac": "audio/flac", ".mp4": "video/mp4", ".webm": "video/webm"}


def _samples_html(run: RunData) -> str:
    if not run.samples:
        return "<p class='note'>No samples written yet (they appear every <code>train.sample_interval</code> steps).</p>"
    out, total, skipped = [], 0, []
    for f in run.samples:
        mime = _MIME.get(f.suffix.lower())
        size = f.stat().st_size
        if mime is None:
            skipped.append(f"{f.name} (kept on disk)")
            continue
        if size > _MAX_FILE or total + size > _MAX_SAMPLES:
            skipped.append(f"{f.name} ({size / 2**20:.1f} MB, too large to embed)")
            continue
        total += size
        src = f"data:{mime};base64,{_b64(f)}"
        cap = _esc(f.relative_to(samples_dir(run.path)).as_posix())
        if mime.startswith("image/"):
            out.append(f"<figure><img src='{src}' alt='{cap}'><figcaption>{cap}</figcaption></figure>")
        elif mime.startswith("audio/"):
            out.append(f"<figure class='audio'><audio controls preload='metadata' src='{src}'></audio><figcaption>{cap}</figcaption></figure>")
        else:
            out.append(f"<figure><video controls muted loop src='{src}'></video><figcaption>{cap}</figcaption></figure>")
    note = f"<p class='note'>Not embedded: {_esc(', '.join(skipped))}</p>" if skipped else ""
    modality = _modality(run.config)
    hint = {"image": "inputs next to reconstructions", "video": "animation of inputs and reconstructions",
            "audio": "waveform/spectrogram plots and players for input and reconstruction",
            "volume": "mid-slices along each axis (NIfTI files stay in the run folder)",
            "series": "input and reconstruction curves"}.get(modality, "inputs and reconstructions")
    return (f"<p class='note'>Step {run.samples_step}, {hint}.</p><div class='samples'>" + "".join(out) + "</div>" + note)


def _modality(config: dict) -> str:
    kind = (config.get("data") or {}).get("kind", "")
    return {"samples": "image"}.get(kind, kind)


def _findings_html(findings: Sequence[Finding]) -> str:
    items = []
    for f in findings:
        fixes = "".join(f"<li><code>{_esc(x)}</code></li>" for x in f.fixes)
        items.append(
            f"<div class='finding {f.severity}'><div class='ftitle'><span class='badge {f.severity}'>{f.severity}</span> "
            f"{_esc(f.title)}</div><div><b>Observed:</b> {_esc(f.observed)}</div><div><b>Likely cause:</b> {_esc(f.cause)}</div>"
            + (f"<div><b>Try, one at a time:</b><ol class='fixes'>{fixes}</ol></div>" if fixes else "") + "</div>")
    return "".join(items)


def _config_html(runs: Sequence[RunData]) -> str:
    parts = []
    if len(runs) > 1:
        flats = [flatten_keys(r.config) for r in runs]
        keys = sorted({k for f in flats for k in f if k != "run.name"})
        diff = [k for k in keys if len({yaml.safe_dump(f.get(k)) for f in flats}) > 1]
        if diff:
            head = "".join(f"<th>{_esc(r.name)}</th>" for r in runs)
            rows = "".join("<tr><td><code>" + _esc(k) + "</code></td>" + "".join(
                f"<td>{_esc(f.get(k))}</td>" for f in flats) + "</tr>" for k in diff)
            parts.append(f"<h3>Differences</h3><table class='tbl'><tr><th>key</th>{head}</tr>{rows}</table>")
        else:
            parts.append("<p class='note'>The configs are identical (apart from the run name).</p>")
    for r in runs:
        text = yaml.safe_dump(r.config, sort_keys=False, default_flow_style=None) if r.config else "(no config.yaml)"
        parts.append(f"<details{' open' if len(runs) == 1 else ''}><summary>{_esc(r.name)}: config.yaml</summary>"
                     f"<pre>{_esc(text)}</pre></details>")
    return "".join(parts)


def _view(run: RunData) -> RunView:
    return RunView(run.train, run.val, run.config, [], Thresholds(), run.facts)


def _summary_row(run: RunData) -> str:
    view = _view(run)
    cells = [run.name, f"{int(view.last_step)}"]
    t = [r.get("time") for r in run.records if isinstance(r.get("time"), (int, float))]
    cells.append(f"{max(t) / 60:.1f} min" if t else "")
    if run.val.has("loss"):
        st, v = run.val.get("loss")
        cells.append(f"{fmt_num(float(v.min()))} (step {int(st[v.argmin()])})")
    else:
        cells.append("")
    cells.append(f"{view.recent_median('val', 'psnr'):.3g} dB" if run.val.has("psnr") else "")
    if not view.continuous and run.train.has("perplexity"):
        p = view.recent_median("train", "perplexity")
        cells.append(f"{p:.3g} / {view.n_codes}")
    else:
        cells.append("")
    cells.append(f"{100 * view.recent_median('train', 'window_usage'):.3g}%" if run.train.has("window_usage") else "")
    top = run.findings[0] if run.findings else None
    status = f"<span class='badge {top.severity}'>{top.severity}</span> {_esc(top.title)}" if top else ""
    return "<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in cells) + f"<td>{status}</td></tr>"


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#1d232a}
header{background:#1d2b3a;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}header p{margin:4px 0 0;opacity:.8}
main{padding:8px 28px 40px;max-width:1260px}section{background:#fff;border:1px solid #e2e5ea;border-radius:8px;padding:14px 18px;margin:16px 0}
h2{font-size:17px;margin:0 0 10px}h3{font-size:15px;margin:12px 0 6px}.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(540px,1fr));gap:10px}
.plot svg{width:100%;height:auto}.tbl{border-collapse:collapse;font-size:13px}.tbl td,.tbl th{border-bottom:1px solid #e6e8eb;padding:4px 10px;text-align:left}
.finding{border-left:4px solid #999;padding:6px 12px;margin:8px 0;background:#fafbfc}.finding.critical{border-color:#c62828}.finding.warning{border-color:#ef8f00}
.finding.info{border-color:#1e88e5}.finding.ok{border-color:#2e7d32}.ftitle{font-weight:600;margin-bottom:2px}.fixes{margin:2px 0 0 0}
.badge{display:inline-block;font-size:11px;text-transform:uppercase;border-radius:3px;padding:0 6px;color:#fff;background:#777}
.badge.critical{background:#c62828}.badge.warning{background:#ef8f00}.badge.info{background:#1e88e5}.badge.ok{background:#2e7d32}
.samples{display:flex;flex-wrap:wrap;gap:12px}.samples figure{margin:0;max-width:100%}.samples img{max-width:100%;max-height:520px;image-rendering:pixelated;border:1px solid #ddd}
figcaption{font-size:12px;color:#5b6570}.note{color:#5b6570;font-size:13px}pre{background:#f3f4f6;padding:10px;overflow:auto;font-size:12px;max-height:520px}
code{background:#f0f1f3;padding:0 3px;border-radius:3px}
"""


def _rd_plot(runs: Sequence[RunData], salt: str) -> str | None:
    """PSNR against bits per pixel (means over the RD files, one point per level count): ndvq, JPEG, WebP."""
    have = [(i, r) for i, r in enumerate(runs) if r.rd]
    if not have:
        return None
    fig, ax = _figure()
    for i, r in have:
        color, tag = f"C{i % 10}", (f"{r.name} " if len(runs) > 1 else "")
        means = r.rd["summary"].get("means", [])
        for codec, style, label in (("ndvq", "-", "ndvq"), ("jpeg", "--", "JPEG"), ("webp", ":", "WebP")):
            pts = sorted((m[codec]["bpp"], m[codec]["psnr"]) for m in means
                         if m.get(codec, {}).get("bpp") is not None and m[codec].get("psnr") is not None)
            if pts:
                ax.plot(*zip(*pts), color=color if codec == "ndvq" else {"jpeg": "0.35", "webp": "0.6"}[codec],
                        ls=style, marker="o", ms=4, lw=1.6, label=f"{tag}{label}")
    ax.set_xlabel("bits per pixel (real file size)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("Rate-distortion on the RD files (mean per level count)")
    ax.legend(fontsize=8)
    return _svg(fig, salt)


def _rd_html(runs: Sequence[RunData]) -> str:
    """The rate-distortion section (empty when no run has ``rd.json``)."""
    plot = _rd_plot(runs, "rd1")
    if plot is None:
        return ""
    notes = []
    for r in (r for r in runs if r.rd):
        bd = r.rd["summary"].get("bd_rate", {})
        parts = [f"vs {k.upper()} {v['bd_rate_percent']:+.1f}%" for k, v in bd.items()
                 if isinstance(v, dict) and v.get("bd_rate_percent") is not None]
        notes.append(f"<li><b>{_esc(r.name)}</b>: {len(r.rd.get('files', []))} file(s) of {_esc(r.rd.get('data', '?'))}; "
                     f"BD-rate {_esc(', '.join(parts) or 'n/a (no overlapping PSNR range)')}</li>")
    return (f"<section id='rd'><h2>Rate-distortion</h2><div class='plot'>{plot}</div><ul class='note'>{''.join(notes)}"
            "</ul></section>")


def build_report(runs: Sequence[RunData]) -> str:
    """The report's HTML text for one or more loaded runs."""
    if not runs:
        raise ValueError("build_report needs at least one run")
    import datetime

    names = ", ".join(r.name for r in runs)
    views = [_view(r) for r in runs]
    n_codes = {i: v.n_codes for i, v in enumerate(views) if not v.continuous}
    continuous = all(v.continuous for v in views)
    plots = [
        _curve_plot(runs, ["loss"], "Total loss", "loss", "p1", log=True),
        _curve_plot(runs, ["recon_loss"], "Reconstruction loss", "recon loss", "p2", log=True),
        _curve_plot(runs, ["kl_loss"] if continuous else ["commitment_loss"], "KL loss" if continuous else "Commitment loss",
                    "kl" if continuous else "commitment", "p3", log=True),
    ]
    if continuous:
        plots.append(_curve_plot(runs, ["perceptual_loss"], "Perceptual loss", "perceptual", "p4"))
        plots.append(_curve_plot(runs, ["gen_loss"], "Generator (adversarial) loss", "gen", "p4b"))
        plots.append(_curve_plot(runs, ["disc_loss"], "Discriminator loss", "disc", "p4c", splits=("train",)))
        plots.append(_curve_plot(runs, ["latent_std"], "Std of the latent means (scale_factor = 1/std)", "std", "p4d"))
    else:
        plots.append(_curve_plot(runs, ["perplexity"], "Perplexity (dotted: n_codes)", "perplexity", "p5", log=True, hlines=n_codes))
        plots.append(_curve_plot(runs, ["window_usage", "usage"], "Code usage (train: sliding window; val: batch)",
                                 "% of codes used", "p6", scale=100.0))
        plots.append(_curve_plot(runs, ["dead_codes"], "Dead codes", "codes", "p7", splits=("train",)))
    plots.append(_curve_plot(runs, ["psnr"], "Validation PSNR", "dB", "p8", splits=("val",)))
    plots.append(_curve_plot(runs, ["lr"], "Learning rate", "lr", "p9", splits=("train",)))
    curves = "".join(f"<div class='plot'>{p}</div>" for p in plots if p)
    hist = _usage_hist_plot(runs, "h1")
    notes = "".join(f"<li><b>{_esc(r.name)}</b>: {_esc(r.usage_note)}" + (f"; {_esc(usage_summary(r.usage))}" if r.usage else "")
                    + "</li>" for r in runs)
    hist_html = (f"<div class='plot'>{hist}</div>" if hist else "") + f"<ul class='note'>{notes}</ul>"
    head = "<tr><th>run</th><th>steps</th><th>time</th><th>best val loss</th><th>val PSNR</th><th>perplexity</th><th>window usage</th><th>doctor</th></tr>"
    summary = f"<table class='tbl'>{head}{''.join(_summary_row(r) for r in runs)}</table>"
    findings = "".join((f"<h3>{_esc(r.name)}</h3>" if len(runs) > 1 else "") + _findings_html(r.findings) for r in runs)
    samples = "".join((f"<h3>{_esc(r.name)}</h3>" if len(runs) > 1 else "") + _samples_html(r) for r in runs)
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    paths = ", ".join(str(r.path) for r in runs)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>ndvq report: {_esc(names)}</title><style>{_CSS}</style></head>
<body><header><h1>ndvq report: {_esc(names)}</h1><p>{_esc(paths)} &middot; generated {when}</p></header><main>
<section id="summary"><h2>Summary</h2>{summary}</section>
<section id="doctor"><h2>Doctor</h2>{findings}</section>
<section id="curves"><h2>Training curves</h2><p class='note'>Train: faint raw values and a smoothed line; val: dashed with markers.</p><div class="grid">{curves}</div></section>
<section id="codes"><h2>{'Latent distribution' if continuous else 'Code usage on the validation split'}</h2>{hist_html}</section>
{_rd_html(runs)}<section id="samples"><h2>Reconstructions</h2>{samples}</section>
<section id="config"><h2>Resolved config</h2>{_config_html(runs)}</section>
</main></body></html>
"""


def write_report(run_dirs: Sequence[str | Path], out: str | Path | None = None, encode: bool = True,
                 max_items: int = 256) -> Path:
    """Write the HTML report for ``run_dirs`` and return its path.

    Args:
        run_dirs: one or more run folders (several are overlaid).
        out: output file. Default: ``<run>/report.html`` for one run, ``report.html`` in the
            current folder for several.
        encode: encode the val split with the best checkpoint for the usage histogram. Default True.
        max_items: val items encoded at most. Default 256.
    """
    if not run_dirs:
        raise ValueError("give at least one run folder")
    runs = [load_run(d, encode=encode, max_items=max_items) for d in run_dirs]
    out = Path(out) if out is not None else (runs[0].path / "report.html" if len(runs) == 1 else Path("report.html"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_report(runs), encoding="utf-8")
    return out
