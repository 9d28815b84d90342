"""Run-dir logging: ``metrics.jsonl``, TensorBoard, the progress bar and the end-of-run summary.

Only rank 0 creates these objects (``enabled=False`` elsewhere turns every method into a no-op).

Example:
    >>> import tempfile
    >>> log = MetricsLogger(tempfile.mkdtemp(), tensorboard=False)
    >>> log.log({"loss": 0.5}, step=10, epoch=0, split="train")["loss"]
    0.5
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch

from ndvq.data.common import PADDING_WARN_SHARE
from ndvq.run.rundir import metrics_path, read_metrics

__all__ = ["MetricsLogger", "Progress", "start_text", "start_warnings", "data_notes", "summary_text",
           "write_recon_samples"]

_BAR_KEYS = ("loss", "recon_loss", "perplexity", "window_usage", "dead_codes", "kl_loss", "lr")


def _clean(v):
    """JSON-safe float: NaN/inf become strings so every line stays valid JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class MetricsLogger:
    """Appends one JSON object per logged step to ``metrics.jsonl`` and mirrors it to TensorBoard.

    Args:
        run_dir: the run directory.
        resume_step: when resuming from a checkpoint at this step, records after it (written between
            that checkpoint and a crash) are dropped, so every step is recorded once. Default None.
        elapsed: seconds of training before this process (``time`` continues from it). Default 0.0.
        tensorboard: write TensorBoard events under ``run_dir/tb`` (when no ``trackers`` are given). Default True.
        enabled: False on ranks other than 0. Default True.
        trackers: the run's ``ndvq.run.trackers.Trackers`` (``train.loggers``); when given, every record goes
            to them (their ``jsonl`` backend writes ``metrics.jsonl``) and they are closed with the logger.
            Default None: ``metrics.jsonl`` and TensorBoard here.
    """

    def __init__(self, run_dir: str | Path, resume_step: int | None = None, elapsed: float = 0.0,
                 tensorboard: bool = True, enabled: bool = True, trackers=None):
        self.enabled, self.trackers = enabled, trackers
        self.records: list[dict] = []
        self.t0 = time.time() - elapsed
        self.path = metrics_path(run_dir)
        self.tb = None
        if not enabled:
            return
        if self.path.exists():  # resume: keep the history for the doctor and the summary
            self.records = read_metrics(self.path)
            if resume_step is not None:
                self._truncate(resume_step)
        if tensorboard and trackers is None:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(run_dir) / "tb"))

    def _truncate(self, step: int) -> None:
        """Drop the records after ``step`` (atomically rewrites the file)."""
        kept = [r for r in self.records if not isinstance(r.get("step"), (int, float)) or r["step"] <= step]
        if len(kept) == len(self.records):
            return
        self.records = kept
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        tmp.replace(self.path)

    def elapsed(self) -> float:
        """Seconds of training, including those before a resume."""
        return time.time() - self.t0

    def log(self, scalars: dict[str, float], step: int, epoch: int, split: str) -> dict:
        """Write one record ``{"step", "epoch", "split", "time", **scalars}`` and return it."""
        rec = {"step": step, "epoch": epoch, "split": split, "time": round(self.elapsed(), 3),
               **{k: _clean(float(v)) for k, v in scalars.items()}}
        if not self.enabled:
            return rec
        self.records.append(rec)
        if self.trackers is not None:
            self.trackers.log_scalars(split, step, {k: v for k, v in rec.items() if k not in ("step", "split")})
            return rec
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(f"{split}/{k}", float(v), step)
        return rec

    def flush(self) -> None:
        """Flush TensorBoard events."""
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        """Close the TensorBoard writer and the trackers."""
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.trackers is not None:
            self.trackers.close()
            self.trackers = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _fmt(v: float) -> str:
    if isinstance(v, str):
        return v
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.3e}"


class Progress:
    """A tqdm bar on a terminal; one compact line per log interval otherwise (logs, SLURM).

    Args:
        total: total optimiser steps.
        initial: steps already done (resume).
        enabled: False on ranks other than 0.
    """

    def __init__(self, total: int, initial: int = 0, enabled: bool = True):
        self.enabled, self.total = enabled, total
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True, mininterval=0.5)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def show(self, rec: dict) -> None:
        """Show the key metrics of a train record."""
        if not self.enabled:
            return
        items = {k: rec[k] for k in _BAR_KEYS if k in rec}
        if self.bar is not None:
            self.bar.set_postfix({k: _fmt(v) for k, v in items.items()}, refresh=False)
        else:
            text = " ".join(f"{k}={_fmt(v)}" for k, v in items.items())
            print(f"step {rec['step']}/{self.total} epoch {rec['epoch']} {text}", file=sys.stderr, flush=True)

    def write(self, text: str) -> None:
        """Print a message without breaking the bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()




def start_text(session, datasets: dict) -> str:
    """The header printed when ``ndvq train`` starts: where the run goes, what data and model it uses,
    how much of each item is padding, what the data layer changed (resampling, position splits,
    skipped files) and warnings about the schedule (see :func:`start_warnings`).

    Args:
        session: the loop's ``Session`` (model, fabric, run dir, step counts, config).
        datasets: ``{"train": dataset, "val": dataset}``.
    """
    net, fabric, t = session.net, session.fabric, session.cfg.train
    n_params = sum(p.numel() for p in net.parameters())
    lines = [f"ndvq train: {type(net).__name__}, {n_params / 1e6:.2f} M parameters, {session.total} steps "
             f"({session.steps_per_epoch} per epoch), {fabric.world_size} process(es) on {fabric.device}, "
             f"precision {t.precision}",
             f"  run dir      {session.run_dir}"]
    for split, ds in datasets.items():
        text = ds.summary() if hasattr(ds, "summary") else f"{len(ds)} item(s)"
        lines.append(f"  {split + ' data':<12} {text}")
    pad = padding_line(datasets)
    lines += [f"  {'data':<12} {n}" for n in ([pad] if pad else []) + data_notes(datasets)]
    if t.compile:
        lines.append("  compile      torch.compile (train.compile=true): the first step compiles the model; "
                     "its time is printed when it is done")
    lines += [f"  warning      {w}" for w in start_warnings(session, datasets)]
    return "\n".join(lines)


def data_notes(datasets: dict) -> list[str]:
    """What the data layer did, once per distinct line: resampling, position splits, skipped files."""
    out: list[str] = []
    for ds in datasets.values():
        for n in getattr(ds, "notes", None) or []:
            if n not in out:
                out.append(n)
    return out


def padding_fix(ds, data=None) -> str | None:
    """The config change that removes most of the padding of ``ds`` (the dataset's own suggestion first);
    None when it is the value ``data`` (the run's ``cfg.data``, default None: not checked) already has."""
    from ndvq.config.load import parse_overrides

    fix = getattr(ds, "suggested_fix", None)
    if not fix:
        idx = range(0, len(ds), max(len(ds) // 4096, 1))
        if ds.modality in ("audio", "series"):
            longest = max(ds.extent(i)[0][0] for i in idx)
            fix = f"data.segment_length={max(2 ** int(math.log2(max(longest, 2))), 16)}"
        elif ds.modality == "video":
            return "data.sequence_length=<frames of the shortest video>"
        else:
            shape = [min(ds.extent(i)[0][a] for i in idx) for a in range(ds.n_dims)]
            fix = f"data.patch_size={[2 ** int(math.log2(max(s, 1))) for s in shape]}"
    [(key, value)] = parse_overrides([fix])
    return None if data is not None and getattr(data, key.split(".")[-1], None) == value else fix


def start_warnings(session, datasets: dict) -> list[str]:
    """Warnings printed at start: padding above :data:`PADDING_WARN_SHARE` of the average item (with the
    fix), ``warmup_steps >= `` the run's steps, validation / sample / checkpoint intervals larger than
    the run (the last step validates, writes samples and checkpoints anyway)."""
    t, total, out = session.cfg.train, session.total, []
    train = "train" if "train" in datasets else next(iter(datasets))
    shares = {split: ds.padding_share() for split, ds in datasets.items() if hasattr(ds, "padding_share")}
    padded = {split: share for split, share in shares.items() if share is not None and share > PADDING_WARN_SHARE}
    # one fix for every split, the train split's, when it needs one: a size that fits the train split is kept
    fix = padding_fix(datasets[train], session.cfg.data) if train in padded else None
    for split, share in padded.items():
        unit = "window" if datasets[split].n_dims == 1 else "item"
        tail = (f"try {fix}" if fix else "no smaller size is suggested" if train in padded else
                f"its items are shorter than the {unit}, which fits the train split and is kept")
        out.append(f"{share:.0%} of the average {split} {unit} is padding (excluded from losses and metrics, but "
                   f"computed); {tail}")
    if t.warmup_steps and t.warmup_steps >= total:
        out.append(f"train.warmup_steps={t.warmup_steps} >= the run's {total} steps: the learning rate never "
                   f"leaves warm-up; lower train.warmup_steps (e.g. {max(total // 10, 1)})")
    names = ("train.val_interval", "train.sample_interval", "train.ckpt_interval")
    big = [f"{n}={v}" for n, v in zip(names, session.intervals) if v and v > total]
    if big:
        out.append(f"{', '.join(big)} > the run's {total} steps: only the last step validates / writes "
                   f"samples / checkpoints")
    return out


def padding_line(datasets: dict) -> str | None:
    """``"padding: 58% of the average train window, 61% of val"`` (None when no dataset can tell)."""
    parts = []
    for split, ds in datasets.items():
        share = ds.padding_share() if hasattr(ds, "padding_share") else None
        if share is not None:
            parts.append(f"{share:.0%} of the average {split} {'window' if ds.n_dims == 1 else 'item'}")
    return "padding: " + ", ".join(parts) if parts else None


def summary_text(run_dir: Path, records: list[dict], best: list[list], elapsed: float, steps: int,
                 stopped: str) -> str:
    """The one-screen summary printed at the end of ``ndvq train``."""
    train = [r for r in records if r.get("split") == "train"]
    val = [r for r in records if r.get("split") == "val"]
    last_t, last_v = (train[-1] if train else {}), (val[-1] if val else {})
    lines = [f"ndvq train: {stopped} after {steps} steps in {elapsed:.0f} s", f"  run dir      {run_dir}"]
    if last_t:
        lines.append("  final train  " + "  ".join(f"{k}={_fmt(last_t[k])}" for k in
                                                    ("loss", "recon_loss", "window_usage", "dead_codes",
                                                     "perplexity", "samples_per_sec") if k in last_t))
    if last_v:
        lines.append("  final val    " + "  ".join(f"{k}={_fmt(last_v[k])}" for k in
                                                    ("loss", "recon_loss", "psnr", "usage", "perplexity")
                                                    if k in last_v))
    if val:
        b = min(val, key=lambda r: r.get("recon_loss", float("inf")) if isinstance(r.get("recon_loss"), float) else float("inf"))
        lines.append(f"  best val     recon_loss={_fmt(b.get('recon_loss', float('nan')))} at step {b['step']}")
    ck = run_dir / "checkpoints"
    lines.append(f"  checkpoints  {ck / 'last.ckpt'}" + "".join(f", {b[1]}" for b in best))
    lines.append(f"  metrics      {run_dir / 'metrics.jsonl'} (TensorBoard: tensorboard --logdir {run_dir / 'tb'})")
    if (run_dir / "samples").exists():
        lines.append(f"  samples      {run_dir / 'samples'}")
    lines.append(f"  next         ndvq eval {run_dir}   |   ndvq doctor {run_dir}   |   ndvq report {run_dir}")
    return "\n".join(lines)


@torch.no_grad()
def write_recon_samples(fabric, net, ds, out_dir: Path, n: int = 4) -> None:
    """Reconstructions of the first ``n`` validation items, in the modality's own format."""
    from ndvq.data import write_samples

    x = torch.stack([ds[i]["data"] for i in range(min(n, len(ds)))])
    was_training = net.training
    net.eval()
    with fabric.autocast():
        recon = net(fabric.to_device(x)).reconstruction.float().cpu()
    net.train(was_training)
    info = ds.item_info(0) if hasattr(ds, "item_info") else None
    write_samples(ds.modality, x, recon.clamp(-1, 1) if ds.modality != "series" else recon, out_dir, info=info)
