"""``ndvq doctor``: read a run's metrics and config, return findings, most important first.

Example:
    >>> from ndvq.diagnostics.doctor import diagnose_run, format_findings
    >>> findings = diagnose_run("runs/my-run")            # doctest: +SKIP
    >>> print(format_findings(findings))                  # doctest: +SKIP

The training loop calls :func:`diagnose` at every validation with the records it has logged
so far and prints the ``critical`` ones (``Finding.severe``). The rules and their thresholds
live in :mod:`ndvq.diagnostics.rules`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import yaml

from ndvq.diagnostics.rules import RULES, SEVERITIES, Finding, RunView, Series, Thresholds, fmt_num

__all__ = [
    "Finding",
    "Thresholds",
    "diagnose",
    "diagnose_run",
    "read_metrics",
    "read_config",
    "read_errors",
    "format_findings",
    "findings_to_json",
    "warning_lines",
]

_ERROR_PATTERN = re.compile(r"(out of memory|outofmemoryerror|cuda error|runtimeerror|traceback)", re.I)


def _config_dict(config) -> dict:
    if config is None:
        return {}
    if hasattr(config, "model_dump"):
        return config.model_dump(mode="json")
    if isinstance(config, dict):
        return config
    raise TypeError(f"config must be a dict or an ndvq.config.Config, got {type(config).__name__}")


def diagnose(records: Sequence[dict], config, thresholds: Thresholds | None = None) -> list[Finding]:
    """Run every rule over the logged records.

    Args:
        records: ``metrics.jsonl`` records (dicts with ``step``, ``split`` and scalars). Records
            with ``split == "error"`` carry an ``error`` text (e.g. a crash message). Order does not matter.
        config: the resolved config, a nested dict (``config.yaml``) or a :class:`ndvq.config.Config`.
        thresholds: thresholds to use; default ``Thresholds()``.

    Returns:
        Findings sorted by severity (``critical``, ``warning``, ``info``, ``ok``) then rule priority.
        When nothing is wrong the list holds one ``ok`` finding ("Looks healthy"); with too few
        records one ``info`` finding says so.

    Example:
        >>> recs = [{"step": s, "split": "train", "loss": 1.0 / (s + 1)} for s in range(0, 100, 10)]
        >>> [f.rule for f in diagnose(recs, {"model": {"kind": "vqvae"}})]
        ['slow', 'healthy']
    """
    th = thresholds or Thresholds()
    cfg = _config_dict(config)
    train = Series.from_records([r for r in records if r.get("split", "train") == "train"])
    val = Series.from_records([r for r in records if r.get("split") == "val"])
    errors = [str(r.get("error", "")) for r in records if r.get("split") == "error"]
    view = RunView(train, val, cfg, errors, th)
    found: list[tuple[int, int, Finding]] = []
    for i, rule in enumerate(RULES):
        f = rule(view, th)
        if f is not None:
            f.rule = f.rule or rule.__name__.removeprefix("rule_")
            found.append((SEVERITIES.index(f.severity), i, f))
    found.sort(key=lambda t: (t[0], t[1]))
    out = [f for _, _, f in found]
    if not any(f.severity in ("critical", "warning") for f in out):
        out.append(_healthy_or_too_early(view, th))
    return out


def _healthy_or_too_early(view: RunView, th: Thresholds) -> Finding:
    if len(view.train) < th.min_records:
        return Finding("info", "Too early to tell",
                       f"{len(view.train)} train and {len(view.val)} val records up to step {int(view.last_step)}; "
                       f"the rules need at least {th.min_records} train records",
                       "the run has only just started", [], "too_early")
    parts = []
    name = view.recon_name
    if view.val.has("loss"):
        st, v = view.val.get("loss")
        parts.append(f"best val loss {fmt_num(float(v.min()))} at step {int(st[v.argmin()])}")
    elif view.train.has(name):
        parts.append(f"train {name} {fmt_num(view.recent_median('train', name))}")
    if view.val.has("psnr"):
        st, v = view.val.get("psnr")
        parts.append(f"val PSNR {v[-1]:.3g} dB at step {int(st[-1])}")
    if not view.is_kl and view.train.has("perplexity"):
        p = view.recent_median("train", "perplexity")
        parts.append(f"perplexity {p:.3g} of {view.n_codes} codes ({100 * p / view.n_codes:.2g}%)")
    if view.train.has("usage"):
        parts.append(f"batch usage {100 * view.recent_median('train', 'usage'):.3g}%")
    return Finding("ok", "Looks healthy",
                   f"no warning over steps {int(view.first_step)}-{int(view.last_step)}: " + ", ".join(parts),
                   "losses fall and nothing is unstable" if view.is_kl else
                   "losses fall, the codebook is used and nothing is unstable", [], "healthy")


def warning_lines(records: Sequence[dict], config, thresholds: Thresholds | None = None) -> list[str]:
    """One short line per severe finding, for the training loop to print at a validation."""
    return [f"doctor: {f.title}: {f.observed}" + (f" -> try {f.fixes[0]}" if f.fixes else "")
            for f in diagnose(records, config, thresholds) if f.severe]


# ----------------------------------------------------------------------------- run folder


def read_metrics(path: str | Path) -> list[dict]:
    """Read ``metrics.jsonl``; blank, truncated or otherwise unparsable lines are skipped.

    Works while the run is writing the file (the last line may be half written).
    """
    path = Path(path)
    out = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
    return out


def read_config(run_dir: str | Path) -> dict:
    """The run's resolved ``config.yaml`` as a dict (``{}`` when absent)."""
    p = Path(run_dir) / "config.yaml"
    if not p.is_file():
        return {}
    data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{p} should hold a mapping of config sections, got {type(data).__name__}")
    return data


def read_errors(paths: Iterable[str | Path]) -> list[dict]:
    """Error records (``{"split": "error", "error": line}``) from crash logs (e.g. a saved stderr)."""
    out = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            continue
        for line in p.read_text(encoding="utf-8", errors="replace").splitlines()[-400:]:
            if _ERROR_PATTERN.search(line):
                out.append({"split": "error", "error": line.strip()})
    return out


def check_run_dir(run_dir: str | Path) -> Path:
    """The run folder as a Path; ValueError when it is not a run folder."""
    p = Path(run_dir)
    if not p.is_dir():
        raise ValueError(f"run folder {str(p)!r} does not exist")
    if not (p / "metrics.jsonl").is_file():
        raise ValueError(f"{str(p)!r} is not a run folder: no metrics.jsonl in it")
    return p


def diagnose_run(run_dir: str | Path, logs: Sequence[str | Path] = (), thresholds: Thresholds | None = None) -> list[Finding]:
    """Diagnose a run folder (running or finished).

    Args:
        run_dir: ``runs/<name>`` with ``metrics.jsonl`` and ``config.yaml``.
        logs: extra text logs to scan for crash messages (out of memory); ``*.log`` files in the
            run folder are always scanned. Default ``()``.
        thresholds: default ``Thresholds()``.
    """
    p = check_run_dir(run_dir)
    records = read_metrics(p / "metrics.jsonl")
    records += read_errors(sorted(p.glob("*.log")) + [Path(x) for x in logs])
    return diagnose(records, read_config(p), thresholds)


# ----------------------------------------------------------------------------- output

_MARK = {"critical": "[CRITICAL]", "warning": "[warning]", "info": "[info]", "ok": "[ok]"}


def format_findings(findings: Sequence[Finding], run_name: str = "") -> str:
    """Human-readable text, most important first, fixes numbered in the order to try them."""
    lines = [f"ndvq doctor: {run_name}" if run_name else "ndvq doctor"]
    for i, f in enumerate(findings, 1):
        lines.append("")
        lines.append(f"{i}. {_MARK[f.severity]} {f.title}")
        lines.append(f"   observed: {f.observed}")
        lines.append(f"   cause:    {f.cause}")
        if f.fixes:
            lines.append("   try (one at a time, in this order):")
            lines += [f"     {j}) {fix}" for j, fix in enumerate(f.fixes, 1)]
    return "\n".join(lines)


def findings_to_json(findings: Sequence[Finding], run_dir: str | Path | None = None) -> str:
    """Machine-readable output: ``{"run": ..., "findings": [{severity, rule, title, observed, cause, fixes}]}``."""
    def clean(x):
        return None if isinstance(x, float) and not math.isfinite(x) else x
    return json.dumps({"run": None if run_dir is None else str(run_dir),
                       "findings": [{k: clean(v) for k, v in f.to_dict().items()} for f in findings]}, indent=2)
