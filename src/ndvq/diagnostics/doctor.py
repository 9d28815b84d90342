"""``ndvq doctor``: read a run's metrics, config and model facts, return findings, most important first.

Example:
    >>> from ndvq.diagnostics.doctor import diagnose_run, format_findings
    >>> findings = diagnose_run("runs/my-run")            # doctest: +SKIP
    >>> print(format_findings(findings))                  # doctest: +SKIP

The training loop does not import this module: ``ndvq train`` hands it :func:`warning_callback`, which
turns the records logged so far into one line per new ``critical`` finding (``Finding.severe``, the one
severity policy). The rules and their thresholds live in :mod:`ndvq.diagnostics.rules`.

Model facts (codebook sizes, downsampling, constructor arguments) come from the model: the run's
``model.json`` (:func:`ndvq.run.rundir.read_model_facts`), or, for runs recorded before it existed, the
model built from the run's config by :func:`ndvq.build.model_facts`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ndvq.diagnostics.rules import (
    RULES,
    SEVERITIES,
    Finding,
    RunView,
    Series,
    Thresholds,
    consistent_fixes,
    fmt_num,
)
from ndvq.run.rundir import check_run_dir, metrics_path, read_config, read_metrics, read_model_facts

__all__ = [
    "Finding",
    "Thresholds",
    "diagnose",
    "diagnose_run",
    "facts_from_config",
    "run_facts",
    "read_errors",
    "format_findings",
    "findings_to_json",
    "warning_lines",
    "warning_callback",
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


def facts_from_config(config) -> dict:
    """The model facts of ``config`` (a dict or a Config), asked of the model it builds
    (:func:`ndvq.build.model_facts`; built on the meta device, no weights)."""
    from ndvq.build import model_facts

    return model_facts(config)


def run_facts(run_dir: str | Path, config: dict) -> dict:
    """A run's model facts: its ``model.json``, else (older runs) those of the model its config builds."""
    return read_model_facts(run_dir) or facts_from_config(config)


def diagnose(records: Sequence[dict], config, thresholds: Thresholds | None = None,
             facts: dict | None = None) -> list[Finding]:
    """Run every rule over the logged records.

    Args:
        records: ``metrics.jsonl`` records (dicts with ``step``, ``split`` and scalars). Records
            with ``split == "error"`` carry an ``error`` text (e.g. a crash message). Order does not matter.
        config: the resolved config, a nested dict (``config.yaml``) or a :class:`ndvq.config.Config`.
        thresholds: thresholds to use; default ``Thresholds()``.
        facts: the model's facts (``model.json``, :func:`run_facts`). Default None: those of the model
            ``config`` builds (:func:`facts_from_config`).

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
    view = RunView(train, val, cfg, errors, th, facts if facts is not None else facts_from_config(cfg))
    found: list[tuple[int, int, Finding]] = []
    for i, rule in enumerate(RULES):
        f = rule(view, th)
        if f is not None:
            f.rule = f.rule or rule.__name__.removeprefix("rule_")
            found.append((SEVERITIES.index(f.severity), i, f))
    found.sort(key=lambda t: (t[0], t[1]))
    out = consistent_fixes([f for _, _, f in found])
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
    if not view.continuous and view.train.has("perplexity"):
        p = view.recent_median("train", "perplexity")
        parts.append(f"perplexity {p:.3g} of {view.n_codes} codes ({100 * p / view.n_codes:.2g}%)")
    if view.train.has("usage"):
        parts.append(f"batch usage {100 * view.recent_median('train', 'usage'):.3g}%")
    return Finding("ok", "Looks healthy",
                   f"no warning over steps {int(view.first_step)}-{int(view.last_step)}: " + ", ".join(parts),
                   "losses fall and nothing is unstable" if view.continuous else
                   "losses fall, the codebook is used and nothing is unstable", [], "healthy")


def warning_lines(records: Sequence[dict], config, thresholds: Thresholds | None = None,
                  facts: dict | None = None) -> list[str]:
    """One short line per severe finding (``Finding.severe``): ``doctor [critical]: title - observed; try fix1; fix2``."""
    return [_warning_line(f) for f in diagnose(records, config, thresholds, facts) if f.severe]


def _warning_line(f: Finding) -> str:
    return f"doctor [{f.severity}]: {f.title} - {f.observed}" + (f"; try {'; '.join(f.fixes[:2])}" if f.fixes else "")


class _WarningCallback:
    """See :func:`warning_callback`."""

    def __init__(self, config: dict, thresholds: Thresholds | None):
        self.config, self.thresholds = _config_dict(config), thresholds
        self.facts: dict | None = None
        self.seen: set[str] = set()

    def __call__(self, records: list[dict]) -> list[str]:
        try:
            if self.facts is None:
                self.facts = facts_from_config(self.config)
            found = [f for f in diagnose(records, self.config, self.thresholds, self.facts) if f.severe]
        except Exception as e:  # the doctor must never stop a training run: say once that it was skipped
            key = f"skipped: {type(e).__name__}"
            if key in self.seen:
                return []
            self.seen.add(key)
            return [f"doctor: skipped ({type(e).__name__}: {' '.join(str(e).split())[:200]})"]
        new = [f for f in found if f.title not in self.seen]
        self.seen.update(f.title for f in new)
        return [_warning_line(f) for f in new]


def warning_callback(config: dict, thresholds: Thresholds | None = None) -> Callable[[list[dict]], list[str]]:
    """What the training loop calls at each validation instead of importing the doctor.

    Args:
        config: the run's resolved config (a dict, or a Config).
        thresholds: default ``Thresholds()``.

    Returns:
        ``on_warning(records) -> list[str]``: one line per severe finding of the records logged so far
        that this callback has not reported before (each finding title once per run). The model facts
        are computed once, at the first call.

    Example:
        >>> cb = warning_callback({"model": {"n_codes": 64}})      # doctest: +SKIP
        >>> cb(logger.records)                                      # doctest: +SKIP
        ['doctor [critical]: Codebook collapse - perplexity 1.2 of 64 codes ...; try model.quantizer.restart=batch; ...']
    """
    return _WarningCallback(config, thresholds)


class _FindingsCallback:
    """``f(records) -> [finding dicts]`` (a module-level class, so DDP can pickle it to spawned ranks)."""

    def __init__(self, config: dict, thresholds: Thresholds | None = None):
        self.config, self.thresholds = config, thresholds

    def __call__(self, records: list[dict], run_dir=None) -> list[dict]:
        return [f.to_dict() for f in diagnose(records, self.config, self.thresholds)]


def findings_callback(config: dict, thresholds: Thresholds | None = None) -> Callable[[list[dict]], list[dict]]:
    """What the training loop calls once at the end (``on_finish``): every finding of the run as a dict,
    for the experiment trackers (``train.loggers``).

    Args:
        config: the run's resolved config (a dict).
        thresholds: default ``Thresholds()``.
    """
    return _FindingsCallback(config, thresholds)


# ----------------------------------------------------------------------------- run folder


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


def diagnose_run(run_dir: str | Path, logs: Sequence[str | Path] = (), thresholds: Thresholds | None = None) -> list[Finding]:
    """Diagnose a run folder (running or finished).

    Args:
        run_dir: ``runs/<name>`` with ``metrics.jsonl``, ``config.yaml`` and (newer runs) ``model.json``.
        logs: extra text logs to scan for crash messages (out of memory); ``*.log`` files in the
            run folder are always scanned. Default ``()``.
        thresholds: default ``Thresholds()``.
    """
    p = check_run_dir(run_dir)
    config = read_config(p)
    records = read_metrics(metrics_path(p)) + read_errors(sorted(p.glob("*.log")) + [Path(x) for x in logs])
    return diagnose(records, config, thresholds, run_facts(p, config))


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
