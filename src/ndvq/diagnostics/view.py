"""What the doctor's rules read: a run's metrics as arrays (:class:`Series`), the run with its
config (:class:`RunView`), the :class:`Finding` they return, and text formatting helpers.

Example:
    >>> recs = [{"step": s, "split": "train", "loss": 1.0 / (s + 1)} for s in range(0, 50, 10)]
    >>> s = Series.from_records(recs)
    >>> s.get("loss")[1].round(3).tolist()
    [1.0, 0.091, 0.048, 0.032, 0.024]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ndvq.diagnostics.rules import Thresholds

__all__ = ["SEVERITIES", "Finding", "Series", "RunView", "fmt_num", "fmt_kv"]

SEVERITIES = ("critical", "warning", "info", "ok")
"""Severity order, most important first. ``critical`` findings are printed by the training loop."""


@dataclass
class Finding:
    """One diagnosis.

    Args:
        severity: one of :data:`SEVERITIES` (``"critical"``, ``"warning"``, ``"info"``, ``"ok"``).
        title: short name of the problem, e.g. ``"Codebook collapse"``.
        observed: what the metrics show, with numbers and steps.
        cause: the likely cause.
        fixes: ranked ``key=value`` overrides for ``ndvq train`` (try one at a time), may be empty.
        rule: id of the rule that produced it (e.g. ``"collapse"``).
    """

    severity: str
    title: str
    observed: str
    cause: str
    fixes: list[str] = field(default_factory=list)
    rule: str = ""

    @property
    def severe(self) -> bool:
        """True for findings the training loop should print as a warning (``critical``)."""
        return self.severity == "critical"

    def to_dict(self) -> dict:
        return {
            "severity": self.severity,
            "rule": self.rule,
            "title": self.title,
            "observed": self.observed,
            "cause": self.cause,
            "fixes": list(self.fixes),
        }



# ----------------------------------------------------------------------------- metrics view


@dataclass
class Series:
    """One split's records as arrays: ``steps [N]`` and ``values[name] [N]`` (NaN where absent)."""

    steps: np.ndarray
    values: dict[str, np.ndarray]
    bad: dict[str, np.ndarray] = field(default_factory=dict)
    """``bad[name]``: True where the record had ``name`` but its value was NaN/inf/null."""

    @staticmethod
    def from_records(records: Sequence[dict]) -> Series:
        recs = sorted((r for r in records if isinstance(r.get("step"), (int, float))), key=lambda r: r["step"])
        steps = np.array([float(r["step"]) for r in recs], dtype=float)
        names = {k for r in recs for k, v in r.items() if k not in ("step", "epoch", "split", "time")}
        values, bad = {}, {}
        for k in names:
            col = np.array([_as_float(r.get(k)) for r in recs], dtype=float)
            present = np.array([k in r for r in recs], dtype=bool)
            values[k] = col
            bad[k] = present & ~np.isfinite(col)
        return Series(steps, values, bad)

    def nonfinite_steps(self, name: str) -> np.ndarray:
        """Steps where ``name`` was logged with a non-finite value."""
        return self.steps[self.bad[name]] if name in self.bad else np.empty(0)

    def __len__(self) -> int:
        return len(self.steps)

    def has(self, name: str) -> bool:
        return name in self.values and bool(np.isfinite(self.values[name]).any())

    def get(self, name: str, start: float = -math.inf, finite: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of ``name`` from step ``start`` on (finite values only by default)."""
        if name not in self.values:
            return np.empty(0), np.empty(0)
        v = self.values[name]
        keep = self.steps >= start
        if finite:
            keep &= np.isfinite(v)
        return self.steps[keep], v[keep]


def _as_float(v) -> float:
    if isinstance(v, bool) or v is None:
        return math.nan
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return math.nan
    return math.nan


_OLD_NAMES: dict[str, tuple[str, ...]] = {
    "model.videogpt.n_hiddens": ("model.n_hiddens",),
    "model.videogpt.num_res_blocks": ("model.n_res_layers",),
    "model.videogpt.norm_num_groups": ("model.num_groups",),
    "model.videogpt.downsample": ("model.downsample",),
    "model.videogpt.norm": ("model.norm",),
    "model.videogpt.n_head": ("model.n_head",),
    "model.videogpt.attn_type": ("model.attn_type",),
    "model.videogpt.dropout": ("model.dropout",),
    "model.quantizer.beta": ("model.codebook_beta",),
    "model.quantizer.ema_decay": ("model.ema_decay",),
    "model.quantizer.fsq_levels": ("model.quantizer.levels",),
    "model.bottleneck": ("model.quantizer.kind",),
    "loss.recon_loss": ("model.recon_loss",),
    "loss.recon_weight": ("model.recon_loss_factor",),
}
"""New config key -> the names recorded runs used before the schema was renamed (read as a fallback)."""


def _old_names(dotted: str) -> tuple[str, ...]:
    if dotted.startswith("model.ldm."):
        return ("model.klvae." + dotted.removeprefix("model.ldm."),)
    return _OLD_NAMES.get(dotted, ())


def _lookup(node, dotted: str):
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


@dataclass
class RunView:
    """What the rules read: the run's train/val series, its config and its model's facts.

    Args:
        train: train split series.
        val: val split series.
        config: resolved config as a plain nested dict (``Config.model_dump(mode="json")`` or a recorded
            ``config.yaml``, old key names included).
        errors: error texts seen in the run (crash logs; ``{"split": "error", "error": ...}`` records).
        th: thresholds in use.
        facts: the model's facts (``model.json``: ``class``, ``args``, ``codebook_sizes``, ``downsample``,
            ...), asked of the model, never rebuilt from config strings.
    """

    train: Series
    val: Series
    config: dict
    errors: list[str]
    th: Thresholds
    facts: dict

    def cfg(self, dotted: str, default=None):
        """A config value by its (new) dotted key, ``default`` when absent or null.

        ``model.*`` keys are read from the model's constructor arguments (``facts["args"]``) first, then
        from the config under the new name, then under the old names of recorded runs
        (``model.n_hiddens`` for ``model.videogpt.n_hiddens``, ``model.klvae.*`` for ``model.ldm.*``, ...).
        """
        candidates = []
        if dotted.startswith("model."):
            candidates.append(_lookup(self.facts.get("args") or {}, dotted.removeprefix("model.")))
        candidates += [_lookup(self.config, name) for name in (dotted, *_old_names(dotted))]
        return next((c for c in candidates if c is not None), default)

    @property
    def continuous(self) -> bool:
        """True for a model without discrete codes (a Gaussian bottleneck): ``not codebook_sizes``."""
        return not self.facts.get("codebook_sizes")

    @property
    def n_codes(self) -> int:
        """Codes per codebook that the logged perplexity/usage refer to (the model's
        ``codebook_sizes``; hierarchical: the bottom level, the last entry). 0 for a continuous model."""
        sizes = self.facts.get("codebook_sizes") or [0]
        return int(sizes[-1])

    @property
    def bottleneck(self) -> str:
        """The model's bottleneck kind (``vq``, ``residual``, ``grouped``, ``fsq``, ``lfq``, ``simvq``, ``gaussian``)."""
        return str(self.cfg("model.bottleneck", "vq"))

    @property
    def backbone(self) -> str:
        """The model's backbone (``videogpt`` or ``ldm``)."""
        return str(self.cfg("model.backbone", "videogpt"))

    @property
    def embedding_dim(self) -> int:
        """Channels of the latent the bottleneck sees (the model's default when its args leave it None)."""
        return int(self.cfg("model.embedding_dim") or (4 if self.continuous else 64))

    @property
    def last_step(self) -> float:
        ends = [s.steps[-1] for s in (self.train, self.val) if len(s)]
        return max(ends) if ends else 0.0

    @property
    def first_step(self) -> float:
        starts = [s.steps[0] for s in (self.train, self.val) if len(s)]
        return min(starts) if starts else 0.0

    @property
    def warm_end(self) -> float:
        """First step after warm-up."""
        span = self.last_step - self.first_step
        return max(self.first_step + self.th.warmup_fraction * span, float(self.cfg("train.warmup_steps", 0)))

    @property
    def recent_start(self) -> float:
        span = self.last_step - self.first_step
        return max(self.last_step - self.th.window_fraction * span, self.warm_end)

    def recent(self, split: str, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Values of ``name`` in the recent window; falls back to the last 3 records when the window is empty."""
        s = self.train if split == "train" else self.val
        st, v = s.get(name, self.recent_start)
        if len(v) < 2:
            st, v = s.get(name)
            st, v = st[-3:], v[-3:]
        return st, v

    def recent_median(self, split: str, name: str) -> float:
        _, v = self.recent(split, name)
        return float(np.median(v)) if len(v) else math.nan

    def improvement(self, split: str, name: str) -> tuple[float, float, float, float, float]:
        """Relative drop of ``name`` across the recent window: ``(drop, first, last, step0, step1)``.

        ``first``/``last`` are medians of the first and last third of the window (robust to noise).
        """
        st, v = self.recent(split, name)
        if len(v) < 2:
            return math.nan, math.nan, math.nan, math.nan, math.nan
        k = max(1, len(v) // 3)
        a, b = float(np.median(v[:k])), float(np.median(v[-k:]))
        drop = (a - b) / abs(a) if a else 0.0
        return drop, a, b, float(st[0]), float(st[-1])

    @property
    def recon_name(self) -> str:
        return "recon_loss" if self.train.has("recon_loss") or self.val.has("recon_loss") else "loss"


# ----------------------------------------------------------------------------- formatting


def fmt_num(x: float) -> str:
    """Compact number: 3 significant digits, no trailing noise."""
    if x is None or not math.isfinite(x):
        return str(x)
    if x != 0 and (abs(x) >= 1e4 or abs(x) < 1e-3):
        return f"{x:.3g}"
    return f"{x:.4g}" if abs(x) >= 1 else f"{x:.3g}"


def fmt_kv(key: str, value) -> str:
    """``key=value`` in the override syntax ``ndvq train`` accepts (YAML scalars and flow lists)."""
    if isinstance(value, bool):
        v = "true" if value else "false"
    elif isinstance(value, float):
        v = f"{value:.3g}"
        if "e" not in v and "." not in v:
            v += ".0"
    elif isinstance(value, (list, tuple)):
        v = "[" + ",".join(fmt_kv("", x)[1:] for x in value) + "]"
    elif value is None:
        v = "null"
    else:
        v = str(value)
    return f"{key}={v}"


def _steps(a: float, b: float) -> str:
    return f"steps {int(a)}-{int(b)}"


def _over(view: RunView, st: np.ndarray) -> str:
    if not len(st):
        return ""
    if len(st) == 1 or st[0] == st[-1]:
        return f"at step {int(st[-1])}"
    return f"over {_steps(st[0], st[-1])} ({len(st)} records)"


def _smooth(v: np.ndarray) -> np.ndarray:
    """Running median over ``max(3, N//20)`` records (centred)."""
    k = max(3, len(v) // 20)
    if len(v) < k:
        return v.copy()
    pad = np.pad(v, (k // 2, k - 1 - k // 2), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(pad, k)
    return np.median(windows, axis=1)
