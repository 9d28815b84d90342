"""Experiment trackers behind one small interface: JSONL, TensorBoard, Weights & Biases, MLflow.

``train.loggers`` names the backends (``jsonl`` is always on: ``metrics.jsonl`` is what ``ndvq doctor``
and ``ndvq report`` read). :func:`open_trackers` builds them on rank 0 (elsewhere a no-op) and returns
one :class:`Trackers` that fans every call out:

- ``log_config(config)``: the resolved config (a nested dict);
- ``log_scalars(split, step, values)``: one record of scalars (non-finite values and strings are
  written to JSONL as they are and skipped by the other backends);
- ``log_media(step, paths)``: sample files (images ``.png/.jpg/.gif``, audio ``.wav/.flac/.ogg``,
  anything else - e.g. ``.nii.gz`` volumes - as a file artifact where the backend keeps files);
- ``log_findings(findings)``: the doctor's findings (``Finding`` objects or their ``to_dict()``);
- ``close()``.

wandb and MLflow runs are continued on resume: their run ids are kept in ``run_dir/trackers.json``.
Their settings come from their own environment variables (``WANDB_PROJECT``, ``WANDB_ENTITY``,
``WANDB_MODE=offline``; ``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME``); with no tracking URI
MLflow writes a file store ``file:./mlruns``. A backend whose package is missing raises a one-line
:class:`~ndvq.errors.ConfigError` naming the extra to install.

Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with open_trackers(["jsonl"], d) as tr:
    ...     tr.log_scalars("train", 10, {"epoch": 0, "loss": 0.5})
    >>> open(f"{d}/metrics.jsonl").read().strip()
    '{"step": 10, "split": "train", "epoch": 0, "loss": 0.5}'
"""

from __future__ import annotations

import importlib
import json
import math
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ndvq.errors import ConfigError
from ndvq.run.rundir import metrics_path

__all__ = ["TRACKERS", "Trackers", "open_trackers", "JsonlTracker", "TensorBoardTracker", "WandbTracker",
           "MlflowTracker", "media_kind", "numeric_scalars", "findings_markdown"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
#: record keys that say where a record belongs rather than what was measured
BOOKKEEPING = ("step", "split", "epoch", "time")
_IDS_FILE = "trackers.json"


def media_kind(path: str | Path) -> str:
    """``"image"``, ``"audio"`` or ``"file"`` from a file name's suffix."""
    suffix = Path(path).suffix.lower()
    return "image" if suffix in IMAGE_SUFFIXES else "audio" if suffix in AUDIO_SUFFIXES else "file"


def numeric_scalars(values: dict[str, Any], drop: Sequence[str] = BOOKKEEPING) -> dict[str, float]:
    """The finite numbers of ``values`` as floats, without the keys in ``drop``."""
    out = {}
    for k, v in values.items():
        if k in drop or isinstance(v, (str, bool)) or v is None:
            continue
        v = float(v)
        if math.isfinite(v):
            out[k] = v
    return out


def _finding_dicts(findings: Iterable) -> list[dict]:
    return [f.to_dict() if hasattr(f, "to_dict") else dict(f) for f in findings]


def findings_markdown(findings: Iterable) -> str:
    """The doctor's findings as a Markdown list (severity, title, observed, fixes)."""
    lines = []
    for f in _finding_dicts(findings):
        lines.append(f"- **{f.get('severity', '?')}** {f.get('title', f.get('rule', ''))}: {f.get('observed', '')}")
        lines += [f"    - fix: {fix}" for fix in f.get("fixes") or ()]
    return "\n".join(lines) or "(no findings)"


def _require(module: str, extra: str):
    """Import ``module`` or raise a one-line ConfigError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"train.loggers includes {extra!r} but the {module} package is not installed; "
                          f'install it with: pip install "ndvq[{extra}]"') from None


class _Ids:
    """Run ids of the external trackers, kept in ``run_dir/trackers.json`` so a resume continues them."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / _IDS_FILE

    def get(self, name: str) -> str | None:
        return json.loads(self.path.read_text()).get(name) if self.path.is_file() else None

    def set(self, name: str, value: str) -> None:
        data = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.path.write_text(json.dumps({**data, name: value}, indent=1))


class _Backend:
    """Defaults: every method a no-op, so a backend implements only what it keeps."""

    def log_config(self, config: dict) -> None: ...
    def log_scalars(self, split: str, step: int, values: dict) -> None: ...
    def log_media(self, step: int, paths: Sequence[Path]) -> None: ...
    def log_findings(self, findings: list[dict]) -> None: ...
    def close(self) -> None: ...


class JsonlTracker(_Backend):
    """Appends ``{"step", "split", **values}`` to ``run_dir/metrics.jsonl`` (non-finite floats as strings);
    the findings go to ``run_dir/doctor.json``. Config and samples are already files of the run directory."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = metrics_path(run_dir)

    def log_scalars(self, split: str, step: int, values: dict) -> None:
        clean = {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, "split": split, **clean}) + "\n")

    def log_findings(self, findings: list[dict]) -> None:
        (self.run_dir / "doctor.json").write_text(json.dumps({"findings": findings}, indent=2, default=str))


class TensorBoardTracker(_Backend):
    """TensorBoard events under ``run_dir/tb``: scalars as ``split/name``, the config and findings as
    text, images and audio samples as images and audio."""

    def __init__(self, run_dir: str | Path):
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(Path(run_dir) / "tb"))

    def log_config(self, config: dict) -> None:
        self.tb.add_text("config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```")

    def log_scalars(self, split: str, step: int, values: dict) -> None:
        for k, v in numeric_scalars(values).items():
            self.tb.add_scalar(f"{split}/{k}", v, step)

    def log_media(self, step: int, paths: Sequence[Path]) -> None:
        import numpy as np

        for p in paths:
            kind, tag = media_kind(p), f"samples/{Path(p).name}"
            if kind == "image":
                from PIL import Image

                with Image.open(p) as im:  # a GIF gives its first frame
                    self.tb.add_image(tag, np.asarray(im.convert("RGB")), step, dataformats="HWC")
            elif kind == "audio":
                import soundfile

                wave, rate = soundfile.read(str(p), dtype="float32", always_2d=True)  # [T, C]
                self.tb.add_audio(tag, wave[:, 0], step, sample_rate=rate)

    def log_findings(self, findings: list[dict]) -> None:
        self.tb.add_text("doctor", findings_markdown(findings))

    def close(self) -> None:
        self.tb.close()


class WandbTracker(_Backend):
    """A Weights & Biases run (``WANDB_MODE=offline`` works without a network): scalars as
    ``split/name``, samples as ``wandb.Image``/``wandb.Audio``, findings as a table and the summary."""

    def __init__(self, run_dir: str | Path, name: str):
        wandb = self.wandb = _require("wandb", "wandb")
        ids = _Ids(run_dir)
        run_id = ids.get("wandb") or uuid.uuid4().hex[:8]
        # an absolute dir: wandb's service process may run in another working directory
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "ndvq"), name=name, id=run_id,
                              resume="allow", dir=str(Path(run_dir).resolve()), reinit="create_new")
        ids.set("wandb", run_id)

    def log_config(self, config: dict) -> None:
        self.run.config.update(config, allow_val_change=True)

    def log_scalars(self, split: str, step: int, values: dict) -> None:
        self.run.log({f"{split}/{k}": v for k, v in numeric_scalars(values, ("step", "split")).items()}, step=step)

    def log_media(self, step: int, paths: Sequence[Path]) -> None:
        kinds = {"image": self.wandb.Image, "audio": self.wandb.Audio}
        media = {f"samples/{Path(p).name}": kinds[media_kind(p)](str(p)) for p in paths if media_kind(p) in kinds}
        if media:
            self.run.log(media, step=step)

    def log_findings(self, findings: list[dict]) -> None:
        cols = ["severity", "rule", "title", "observed"]
        self.run.log({"doctor": self.wandb.Table(columns=cols, data=[[str(f.get(c, "")) for c in cols]
                                                                   for f in findings])})
        self.run.summary["doctor"] = [f"{f.get('severity')}: {f.get('title')}" for f in findings]

    def close(self) -> None:
        self.run.finish()


class MlflowTracker(_Backend):
    """An MLflow run (default tracking URI ``file:./mlruns``, no server needed): the config as params
    and ``config.json``, scalars as ``split/name``, samples as artifacts under ``samples/stepN``,
    findings as ``doctor/findings.json`` and the tag ``doctor.worst``."""

    def __init__(self, run_dir: str | Path, name: str):
        mlflow = self.mlflow = _require("mlflow", "mlflow")
        uri = os.environ.get("MLFLOW_TRACKING_URI") or Path("mlruns").resolve().as_uri()
        if uri.startswith("file:"):  # MLflow 3 wants this opt-in for its (maintained, offline) file store
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(uri)
        ids = _Ids(run_dir)
        run_id = ids.get("mlflow")
        if run_id is None:
            mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "ndvq"))
        self.run = mlflow.start_run(run_id=run_id, run_name=None if run_id else name)
        ids.set("mlflow", self.run.info.run_id)
        self.client = mlflow.MlflowClient()

    def log_config(self, config: dict) -> None:
        flat = _flatten(config)
        known = self.client.get_run(self.run.info.run_id).data.params  # params are write-once in MLflow
        new = {k: str(v)[:500] for k, v in flat.items() if k not in known}
        if new:
            self.mlflow.log_params(new)
        self.mlflow.log_dict(config, "config.json")

    def log_scalars(self, split: str, step: int, values: dict) -> None:
        metrics = {f"{split}/{k}": v for k, v in numeric_scalars(values, ("step", "split")).items()}
        self.mlflow.log_metrics(metrics, step=step)

    def log_media(self, step: int, paths: Sequence[Path]) -> None:
        for p in paths:
            self.mlflow.log_artifact(str(p), artifact_path=f"samples/step{step:07d}")

    def log_findings(self, findings: list[dict]) -> None:
        self.mlflow.log_dict({"findings": findings}, "doctor/findings.json")
        if findings:
            self.mlflow.set_tag("doctor.worst", f"{findings[0].get('severity')}: {findings[0].get('title')}")

    def close(self) -> None:
        self.mlflow.end_run()


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"seed": 0}} -> {"train.seed": 0}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


class Trackers:
    """Every enabled backend behind one interface (see the module docstring); a no-op when empty.

    Args:
        backends: ``{name: backend}``. Default ``{}``.
    """

    def __init__(self, backends: dict[str, _Backend] | None = None):
        self.backends = dict(backends or {})

    def _each(self, method: str, *args) -> None:
        for b in self.backends.values():
            getattr(b, method)(*args)

    def log_config(self, config: dict) -> None:
        """Record the resolved config (nested dict)."""
        self._each("log_config", config)

    def log_scalars(self, split: str, step: int, values: dict) -> None:
        """Record one set of scalars of ``split`` (``"train"``, ``"val"``) at optimiser step ``step``."""
        self._each("log_scalars", split, step, values)

    def log_media(self, step: int, paths: Iterable[str | Path]) -> None:
        """Record sample files (images, audio; other files as artifacts where kept)."""
        self._each("log_media", step, [Path(p) for p in paths])

    def log_findings(self, findings: Iterable) -> None:
        """Record the doctor's findings (``Finding`` objects or dicts)."""
        self._each("log_findings", _finding_dicts(findings))

    def close(self) -> None:
        """Flush and close every backend (each once)."""
        backends, self.backends = self.backends, {}
        for b in backends.values():
            b.close()

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


#: backend name -> constructor ``f(run_dir, name)``
TRACKERS = {
    "jsonl": lambda run_dir, name: JsonlTracker(run_dir),
    "tensorboard": lambda run_dir, name: TensorBoardTracker(run_dir),
    "wandb": WandbTracker,
    "mlflow": MlflowTracker,
}


def open_trackers(loggers: Sequence[str], run_dir: str | Path, enabled: bool = True,
                  name: str | None = None) -> Trackers:
    """The backends named in ``loggers`` (``train.loggers``) for ``run_dir``; ``jsonl`` is always on.

    Args:
        loggers: names among ``TRACKERS`` (``"jsonl"``, ``"tensorboard"``, ``"wandb"``, ``"mlflow"``).
        run_dir: the run directory (created if missing).
        enabled: False on ranks other than 0: nothing is opened. Default True.
        name: run name shown by wandb/MLflow. Default None (the run directory's name).

    Raises:
        ConfigError: an unknown name, or a backend whose package is not installed (one line).
    """
    if not enabled:
        return Trackers()
    unknown = sorted(set(loggers) - set(TRACKERS))
    if unknown:
        raise ConfigError(f"train.loggers: unknown tracker(s) {unknown}; expected some of {list(TRACKERS)}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    opened = Trackers()
    try:
        for key in dict.fromkeys(["jsonl", *loggers]):
            opened.backends[key] = TRACKERS[key](run_dir, name or run_dir.name)
    except BaseException:
        opened.close()
        raise
    return opened
