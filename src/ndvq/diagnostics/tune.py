"""``ndvq tune``: Optuna search over any config keys, each trial a short ``ndvq train`` run.

The space file (YAML) maps dotted config keys to what to sample::

    train.learning_rate: {low: 1.0e-4, high: 3.0e-3, log: true}   # float range, log scale
    model.videogpt.num_res_blocks: {low: 1, high: 3}               # int range (both ends ints)
    model.videogpt.n_hiddens: {low: 32, high: 128, step: 32}       # int range with a step
    model.quantizer.beta: {low: 0.1, high: 1.0, type: float}       # explicit type
    model.quantizer.restart: [batch, replay]                       # categorical (a list)
    model.videogpt.downsample: {choices: [[4, 4], [2, 2]]}         # categorical of lists
    optuna:                                                        # optional study settings
      metric: recon_loss      # val metric the trial is judged on (any val scalar), default recon_loss
      direction: minimize     # or maximize (e.g. metric: psnr)
      n_startup_trials: 5     # MedianPruner: trials before pruning starts
      n_warmup_steps: 0       # MedianPruner: steps before a trial can be pruned

The study lives in ``<study-dir>/study.db`` (SQLite), so running the same command again resumes
it: ``--trials N`` is the total of finished (complete or pruned) trials wanted, and a trial that
was interrupted (Ctrl-C, or killed while running) is run again with the same parameters.
Each trial's run folder is ``<study-dir>/trials/trialNNNN`` (``ndvq doctor`` works on it).
At the end: ``results.csv`` and a printed table, ``best_config.yaml`` (pass it to
``ndvq train -c``), and ``importances.png`` (skipped with a note when fewer than two trials
finished or the parameters did not vary).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from ndvq.errors import ConfigError, NdvqError

__all__ = ["TuneError", "TuneResult", "Param", "load_space", "tune"]


class TuneError(ConfigError):
    """A bad space file or study; the message is one line (a user error: exit 2)."""


@dataclass
class Param:
    """One searched key: ``kind`` is ``"float" | "int" | "categorical"``."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list | None = None

    def suggest(self, trial):
        if self.kind == "categorical":
            labels = [_label(c) for c in self.choices]
            picked = trial.suggest_categorical(self.key, labels)
            return self.choices[labels.index(picked)]
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)

    def distribution(self):
        """The Optuna distribution this parameter samples from."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "categorical":
            return CategoricalDistribution([_label(c) for c in self.choices])
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)

    def decode(self, value):
        """A stored Optuna value -> the config value."""
        if self.kind == "categorical":
            labels = [_label(c) for c in self.choices]
            return self.choices[labels.index(value)] if value in labels else value
        return int(value) if self.kind == "int" else float(value)

    def examples(self) -> list:
        return list(self.choices) if self.kind == "categorical" else [
            int(self.low) if self.kind == "int" else float(self.low), int(self.high) if self.kind == "int" else float(self.high)]


def _label(v):
    """Optuna categorical choices must be scalars; lists/dicts become their YAML flow text."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return yaml.safe_dump(v, default_flow_style=True).strip()


def _num(v, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise TuneError(f"{what} must be a number, got {v!r}")
    try:
        return float(v)
    except ValueError:
        raise TuneError(f"{what} must be a number, got {v!r}") from None


def load_space(path: str | Path) -> tuple[list[Param], dict]:
    """Parse a space file into ``(params, study_options)``; errors name the key and what was expected."""
    p = Path(path)
    if not p.is_file():
        raise TuneError(f"space file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise TuneError(f"cannot read space file {str(p)!r}: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict) or not data:
        raise TuneError(f"space file {str(p)!r} must map config keys to ranges or choices, got {type(data).__name__}")
    options = data.pop("optuna", None) or {}
    if not isinstance(options, dict):
        raise TuneError(f"'optuna' in {str(p)!r} must be a mapping, got {options!r}")
    unknown = set(options) - {"metric", "direction", "n_startup_trials", "n_warmup_steps"}
    if unknown:
        raise TuneError(f"unknown 'optuna' option(s) {sorted(unknown)}; expected metric, direction, n_startup_trials, n_warmup_steps")
    if options.get("direction", "minimize") not in ("minimize", "maximize"):
        raise TuneError(f"optuna.direction must be minimize or maximize, got {options['direction']!r}")
    params = []
    for key, spec in data.items():
        if isinstance(spec, list):
            spec = {"choices": spec}
        if not isinstance(spec, dict):
            raise TuneError(f"{key}: expected a list of choices or a mapping with low/high (or choices), got {spec!r}")
        extra = set(spec) - {"type", "low", "high", "log", "step", "choices"}
        if extra:
            raise TuneError(f"{key}: unknown field(s) {sorted(extra)}; allowed: type, low, high, log, step, choices")
        kind = spec.get("type")
        if "choices" in spec or kind == "categorical":
            ch = spec.get("choices")
            if not isinstance(ch, list) or not ch:
                raise TuneError(f"{key}: choices must be a non-empty list, got {ch!r}")
            params.append(Param(str(key), "categorical", choices=ch))
            continue
        if "low" not in spec or "high" not in spec:
            raise TuneError(f"{key}: a range needs low and high (or give choices), got {spec!r}")
        low, high = _num(spec["low"], f"{key}.low"), _num(spec["high"], f"{key}.high")
        if not low < high:
            raise TuneError(f"{key}: low must be below high, got low={spec['low']} high={spec['high']}")
        log = bool(spec.get("log", False))
        if log and low <= 0:
            raise TuneError(f"{key}: a log range needs low > 0, got low={spec['low']}")
        if kind is None:
            kind = "int" if all(isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in ("low", "high")) else "float"
        if kind not in ("int", "float"):
            raise TuneError(f"{key}: type must be int, float or categorical, got {kind!r}")
        step = spec.get("step")
        params.append(Param(str(key), kind, low, high, log, None if step is None else _num(step, f"{key}.step"), None))
    return params, options


@dataclass
class TuneResult:
    """What :func:`tune` returns."""

    study: object
    table: str
    best_config_path: Path | None
    importance_path: Path | None
    importance_note: str
    results_csv: Path


def _base_dict(config: str | Path, overrides) -> dict:
    from ndvq.config import config_to_dict, load_config

    return config_to_dict(load_config(config, list(overrides)))


def _trial_config(base: dict, params: list[Param], values: dict, run_root: Path, name: str):
    from ndvq.config import apply_overrides, validate_config

    data = apply_overrides(base, [(p.key, values[p.key]) for p in params if p.key in values])
    data = apply_overrides(data, [("run.root", str(run_root)), ("run.name", name)])
    return validate_config(data)


def tune(config: str | Path, space: str | Path, trials: int, study_dir: str | Path, overrides=(),
         study_name: str | None = None, seed: int = 0, train_fn=None) -> TuneResult:
    """Run (or resume) a study until ``trials`` trials have finished.

    Args:
        config: base config file.
        space: space file (see the module docstring).
        trials: total finished (complete + pruned) trials wanted.
        study_dir: folder for ``study.db``, ``trials/``, ``results.csv``, ``best_config.yaml``, ``importances.png``.
        overrides: ``key=value`` applied to the base config. Default ``()``.
        study_name: Optuna study name. Default: the study folder's name.
        seed: sampler seed (offset by the number of earlier trials on resume). Default 0.
        train_fn: ``train(cfg, resume=None, on_validation=cb, on_warning=None) -> TrainResult``. Default
            ``ndvq.run.train.train`` (imported here, never when this module is imported).
    """
    import optuna

    if train_fn is None:
        from ndvq.run.train import train as train_fn
    params, opts = load_space(space)
    base = _base_dict(config, overrides)
    study_dir = Path(study_dir)
    run_root = study_dir / "trials"
    for p in params:  # every key exists and both ends / every choice validate, before any training
        for v in p.examples():
            try:
                _trial_config(base, params, {p.key: v}, run_root, "check")
            except NdvqError as e:
                raise TuneError(f"space {p.key}={v!r} does not give a valid config: {e}") from None
    metric = str(opts.get("metric", "recon_loss"))
    direction = opts.get("direction", "minimize")
    study_dir.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{(study_dir / 'study.db').resolve()}"
    name = study_name or study_dir.resolve().name
    probe = optuna.create_study(study_name=name, storage=storage, load_if_exists=True, direction=direction)
    n_before = len(probe.trials)
    study = optuna.create_study(
        study_name=name, storage=storage, load_if_exists=True, direction=direction,
        sampler=optuna.samplers.TPESampler(seed=seed + n_before),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=int(opts.get("n_startup_trials", 5)),
                                           n_warmup_steps=int(opts.get("n_warmup_steps", 0))))
    _check_same_space(study, params)
    _retry_interrupted(study, params)
    S = optuna.trial.TrialState
    done = len(study.get_trials(deepcopy=False, states=(S.COMPLETE, S.PRUNED)))
    sign = 1.0 if direction == "minimize" else -1.0

    def objective(trial):
        values = {p.key: p.suggest(trial) for p in params}
        cfg = _trial_config(base, params, values, run_root, f"trial{trial.number:04d}")
        best = [math.inf]

        def on_validation(step: int, val_metrics: dict) -> None:
            v = val_metrics.get(metric)
            if v is None:
                raise TuneError(f"optuna.metric {metric!r} is not among the val metrics {sorted(val_metrics)}")
            v = float(v)
            if math.isfinite(v):
                best[0] = min(best[0], sign * v)
                trial.report(v, step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at step {step} with val {metric} {v:.4g}")

        trial.set_user_attr("run_dir", str(run_root / f"trial{trial.number:04d}"))
        try:
            result = train_fn(cfg, resume=None, on_validation=on_validation, on_warning=_on_warning(cfg))
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        if getattr(result, "stopped", "finished") == "interrupted":  # the loop caught Ctrl-C and stopped cleanly
            trial.set_user_attr("interrupted", True)
            raise KeyboardInterrupt
        if not math.isfinite(best[0]) and metric == "recon_loss":  # the loop's best_val_loss is the val recon loss
            bv = getattr(result, "best_val_loss", None)
            best[0] = float(bv) if bv is not None else math.inf
        if not math.isfinite(best[0]):
            raise TuneError(f"trial {trial.number} finished without a finite val {metric} (diverged or no validation ran)")
        return sign * best[0]

    remaining = max(0, trials - done)
    if remaining:
        print(f"ndvq tune: study {name!r} in {study_dir}: {done} finished trial(s), running up to {remaining} more")
        study.optimize(objective, n_trials=remaining + max(2, remaining), catch=(ValueError, RuntimeError, FloatingPointError),
                       callbacks=[optuna.study.MaxTrialsCallback(trials, states=(S.COMPLETE, S.PRUNED)), _print_trial])
    return _finish(study, params, base, study_dir, metric)


def _on_warning(cfg):
    """The doctor's warning callback for a trial when its config asks for doctor warnings."""
    from ndvq.diagnostics.doctor import warning_callback

    return warning_callback(cfg.model_dump(mode="json")) if cfg.train.doctor_warnings else None


def _check_same_space(study, params: list[Param]) -> None:
    """A resumed study must sample each key from a compatible distribution."""
    from optuna.distributions import check_distribution_compatibility

    seen = {}
    for t in study.get_trials(deepcopy=False):
        seen.update(t.distributions)
    for p in params:
        if p.key in seen:
            try:
                check_distribution_compatibility(seen[p.key], p.distribution())
            except ValueError as e:
                raise TuneError(f"the space of {p.key} changed since study {study.study_name!r} started ({e}); "
                                f"keep the space or use a new --study-dir") from None


def _retry_interrupted(study, params: list[Param]) -> None:
    """Trials left RUNNING by a killed process, or FAILed by Ctrl-C, are queued again (once)."""
    import optuna

    S = optuna.trial.TrialState
    retried = set(study.user_attrs.get("retried", []))
    for t in study.get_trials(deepcopy=False):
        stale = t.state == S.RUNNING
        if stale:
            study._storage.set_trial_state_values(t._trial_id, S.FAIL)  # noqa: SLF001 - no public API for this
        if (stale or (t.state == S.FAIL and t.user_attrs.get("interrupted"))) and t.number not in retried:
            study.enqueue_trial({p.key: t.params[p.key] for p in params if p.key in t.params}, skip_if_exists=False)
            retried.add(t.number)
    study.set_user_attr("retried", sorted(retried))


def _print_trial(study, trial) -> None:
    value = "" if trial.value is None else f" val={trial.value:.4g}"
    params = ", ".join(f"{k}={_cell(v)}" for k, v in trial.params.items())
    print(f"  trial {trial.number}: {trial.state.name.lower()}{value}  {params}", flush=True)


def _finish(study, params: list[Param], base: dict, study_dir: Path, metric: str) -> TuneResult:
    import optuna

    S = optuna.trial.TrialState
    keys = [p.key for p in params]
    rows = []
    for t in study.get_trials(deepcopy=False):
        last = max(t.intermediate_values) if t.intermediate_values else None
        rows.append([t.number, t.state.name.lower(), "" if t.value is None else f"{t.value:.5g}",
                     "" if last is None else str(last),
                     f"{t.duration.total_seconds():.1f}" if t.duration else "",
                     *[_cell(t.params.get(k, "")) for k in keys]])
    header = ["trial", "state", metric, "last_step", "seconds", *keys]
    csv_path = study_dir / "results.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    table = "\n".join("  ".join(str(x).ljust(n) for x, n in zip(r, widths)) for r in [header, *rows])
    complete = study.get_trials(deepcopy=False, states=(S.COMPLETE,))
    best_path = None
    if complete:
        best = study.best_trial
        values = {p.key: p.decode(best.params[p.key]) for p in params if p.key in best.params}
        cfg = _trial_config(base, params, values, Path(base["run"]["root"]), f"best-of-{study.study_name}")
        from ndvq.config import config_to_yaml

        best_path = study_dir / "best_config.yaml"
        best_path.write_text(f"# best trial {best.number} of study {study.study_name!r}: val {metric} {best.value:.5g}\n"
                             f"# params: {values}\n" + config_to_yaml(cfg))
        table += f"\nbest: trial {best.number}, val {metric} {best.value:.5g}, {values}"
    imp_path, note = _importance_plot(study, study_dir / "importances.png")
    if note:
        table += f"\n{note}"
    return TuneResult(study, table, best_path, imp_path, note, csv_path)


def _cell(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _importance_plot(study, path: Path) -> tuple[Path | None, str]:
    import optuna

    S = optuna.trial.TrialState
    complete = study.get_trials(deepcopy=False, states=(S.COMPLETE,))
    if len(complete) < 2:
        return None, f"parameter importances need at least 2 complete trials (have {len(complete)}); no plot written"
    import warnings

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            imp = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError, ZeroDivisionError) as e:
        return None, f"parameter importances could not be computed ({e}); no plot written"
    note = "; ".join(sorted({" ".join(str(w.message).split()) for w in caught}))
    if not imp:
        return None, "parameter importances are empty (the parameters did not vary); no plot written"
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names, vals = list(imp)[::-1], list(imp.values())[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(names)), dpi=110)
    ax.barh(names, vals, color="#1f77b4")
    ax.set_xlabel("importance (Optuna's default evaluator)")
    ax.set_title(f"Parameter importances, {len(complete)} complete trials", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path, (f"importance note: {note}" if note else "")
