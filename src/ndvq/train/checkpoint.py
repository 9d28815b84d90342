"""Checkpoints: atomic writes, safe loads, RNG state and the keep-N best files.

A checkpoint is a ``torch.save`` dict of tensors and plain Python values (see docs/design.md),
loaded only with ``torch.load(..., weights_only=True)``. Writes go to a temporary file in the same
folder, are flushed to disk and then renamed over the target with ``os.replace``, so a crash mid-write
leaves the previous file intact.

Example:
    >>> import tempfile, torch
    >>> d = tempfile.mkdtemp()
    >>> p = save_checkpoint({"step": 3, "w": torch.ones(2)}, f"{d}/last.ckpt")
    >>> load_checkpoint(p)["step"]
    3
"""

from __future__ import annotations

import os
import random
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["save_checkpoint", "load_checkpoint", "find_checkpoint", "rng_state", "set_rng_state",
           "update_best", "CheckpointError", "EpochSampler",
           "load_model_state", "StopFlag"]


class CheckpointError(ValueError):
    """A missing, unreadable or incompatible checkpoint (one-line message)."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (temp file + fsync + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file from a run dir (``checkpoints/last.ckpt``), a checkpoints dir or a file."""
    p = Path(path)
    for cand in (p, p / "checkpoints" / "last.ckpt", p / "last.ckpt"):
        if cand.is_file():
            return cand
    if not p.exists():
        raise CheckpointError(f"{str(p)!r} does not exist (expected a run directory or a .ckpt file)")
    raise CheckpointError(f"no checkpoint in {str(p)!r} (looked for checkpoints/last.ckpt)")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``, on CPU)."""
    p = find_checkpoint(path)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        msg = " ".join(str(e).split())[:300]
        raise CheckpointError(f"cannot read checkpoint {str(p)!r}: {type(e).__name__}: {msg}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{str(p)!r} is not an ndvq checkpoint (no 'model' entry)")
    return state


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA RNG states as tensors / plain values."""
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]) + [random.getstate()[0]],
        "python_gauss": random.getstate()[2],
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_gauss": [int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    py = state["python"]
    random.setstate((py[-1], tuple(py[:-1]), state["python_gauss"]))
    has_gauss, gauss = state["numpy_gauss"]
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def update_best(best: list[list], value: float, step: int, ckpt_dir: Path, keep: int,
                delete: bool = True) -> tuple[list[list], Path | None]:
    """Keep-N bookkeeping of the best checkpoints (lowest ``value``).

    Args:
        best: ``[[value, file name], ...]`` sorted ascending (stored in every checkpoint).
        value: this validation's reconstruction loss.
        step: current step (names the file ``best-step0001000.ckpt``).
        ckpt_dir: folder of the checkpoints.
        keep: how many best files to keep.
        delete: delete the files that dropped out (rank 0 only). Default True.

    Returns:
        The new list and the path to write now (None when this one is not among the best);
        files that dropped out of the list are deleted.
    """
    if not np.isfinite(value):
        return best, None
    name = f"best-step{step:07d}.ckpt"
    best = sorted([b for b in best if b[1] != name] + [[float(value), name]], key=lambda b: b[0])
    dropped, best = best[keep:], best[:keep]
    for _, old in dropped if delete else ():
        (ckpt_dir / old).unlink(missing_ok=True)
    return best, (ckpt_dir / name if any(b[1] == name for b in best) else None)


class EpochSampler(torch.utils.data.Sampler):
    """A resumable, rank-sharded sampler: the order depends only on ``(seed, epoch)``.

    The epoch's permutation (or ``range`` when not shuffling) is padded to a multiple of
    ``world_size``, rank ``r`` takes every ``world_size``-th index from ``r``, and the first
    ``skip`` indices of the shard are dropped (the items already consumed before a resume).

    Args:
        n: dataset length.
        seed: base seed (``train.seed``).
        epoch: epoch number (mixed into the seed).
        rank: this process's global rank. Default 0.
        world_size: number of processes. Default 1.
        shuffle: random order per epoch. Default True.
        skip: items of this rank's shard to skip. Default 0.
        pad: pad to equal shard sizes (training); False gives uneven shards without repeats (eval).
    """

    def __init__(self, n: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, skip: int = 0, pad: bool = True):
        self.n, self.seed, self.epoch, self.rank, self.world = n, seed, epoch, rank, world_size
        self.shuffle, self.skip, self.pad = shuffle, skip, pad

    def shard(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.pad and self.n % self.world:
            order += order[: self.world - self.n % self.world]
        return order[self.rank:: self.world]

    def __iter__(self):
        return iter(self.shard()[self.skip:])

    def __len__(self) -> int:
        return max(len(self.shard()) - self.skip, 0)


def load_model_state(net, ckpt: dict, model_class: str, margs: dict, where) -> None:
    """Load weights for a resume, with a one-line error when the checkpoint's model differs from the config."""
    if ckpt.get("model_class") != model_class:
        raise CheckpointError(f"checkpoint in {where} holds a {ckpt.get('model_class')}, the config builds a {model_class}")
    old = ckpt.get("model_args", {})
    for k in sorted(set(old) | set(margs)):
        if old.get(k) != margs.get(k):
            raise CheckpointError(f"checkpoint in {where} was trained with model {k}={old.get(k)!r} but the config "
                                  f"has {margs.get(k)!r}; drop that override to resume")
    try:
        net.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint in {where} does not fit the model: {' '.join(str(e).split())[:300]}") from None


class StopFlag:
    """SIGINT/SIGTERM set a local flag; ``requested`` turns True once all ranks agree (every step on one
    process, at log steps under DDP), then the loop saves a checkpoint and returns. A second Ctrl-C
    raises KeyboardInterrupt at once."""

    def __init__(self):
        self.requested, self._signalled, self._old = False, False, {}

    def _handle(self, signum, frame):
        if self._signalled and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self._signalled = True

    def poll(self, fabric, log_step: bool) -> None:
        if fabric.world_size == 1:
            self.requested = self._signalled
        elif log_step:
            flag = fabric.all_reduce(torch.tensor(float(self._signalled), device=fabric.device), reduce_op="sum")
            self.requested = bool(flag.item() > 0)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
