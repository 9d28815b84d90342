"""Signals: SIGINT/SIGTERM ask the training loop to save a checkpoint and return; the exit code tells which.

- :class:`StopFlag` (in every training process): a signal sets a flag; the loop polls it (every step on one
  process, at log steps under DDP, where all ranks agree with one all-reduce), then rank 0 saves a
  checkpoint and every rank returns. :attr:`StopFlag.signum` is the signal (SIGTERM wins when ranks
  got different ones); the command line exits with ``128 + signum``: 130 for SIGINT, 143 for SIGTERM.
- :class:`ForwardSignals` (in the launcher of spawned DDP ranks): SIGINT/SIGTERM to the launcher are
  passed on to every rank, so a signal to the launcher, to one rank or to the whole process group ends
  the same way. A second signal to the launcher kills the ranks at once.
- :func:`ignore_in_workers`: DataLoader workers ignore both signals (their rank stops them).

Example:
    >>> with StopFlag() as stop:
    ...     stop.requested
    False
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from pathlib import Path

import torch

from ndvq.errors import RankDiedError, StoppedBySignal
from ndvq.run.rundir import checkpoints_dir

__all__ = ["StopFlag", "ForwardSignals", "StoppedBySignal", "ignore_in_workers", "exit_code", "launch_ranks"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_code(signum: int) -> int:
    """The shell's code for a process ended by ``signum``: ``128 + signum`` (130 SIGINT, 143 SIGTERM)."""
    return 128 + int(signum)


def ignore_in_workers(worker_id: int) -> None:
    """``worker_init_fn`` of the training DataLoaders: workers ignore SIGINT/SIGTERM (the rank stops them)."""
    for s in _SIGNALS:
        signal.signal(s, signal.SIG_IGN)


class _Handlers:
    """Installs ``self._handle`` for SIGINT and SIGTERM while the ``with`` block runs (main thread only) and
    restores the previous handlers after it."""

    _old: dict

    def __enter__(self):
        if _in_main_thread():
            for s in _SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class StopFlag(_Handlers):
    """SIGINT/SIGTERM set a local flag; ``requested`` turns True once all ranks agree, then the loop saves a
    checkpoint and returns.

    Args:
        escalate: a second SIGINT raises KeyboardInterrupt at once (interactive single-process runs).
            Default True; DDP ranks use False (a Ctrl-C reaches them twice: from the terminal and from
            the launcher).
    """

    def __init__(self, escalate: bool = True):
        self.requested, self.signum, self.escalate, self._old = False, None, escalate, {}

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT and self.escalate:
            raise KeyboardInterrupt
        if self.signum is None or signum == signal.SIGTERM:
            self.signum = signum

    def poll(self, fabric, log_step: bool) -> None:
        """Update :attr:`requested` and :attr:`signum` (an all-reduce over ranks at log steps under DDP)."""
        if fabric.world_size == 1:
            self.requested = self.signum is not None
        elif log_step:
            mine = torch.tensor([float(self.signum == s) for s in _SIGNALS], device=fabric.device)
            n_int, n_term = fabric.all_reduce(mine, reduce_op="sum").tolist()
            self.requested = n_int + n_term > 0
            if self.requested:
                self.signum = signal.SIGTERM if n_term else signal.SIGINT



class ForwardSignals(_Handlers):
    """In the launcher of spawned ranks: pass SIGINT/SIGTERM on to every child process (the ranks).

    A second signal to the launcher kills the ranks (SIGKILL) and raises :class:`StoppedBySignal`.
    :attr:`signum` is the first signal received (None if none).
    """

    def __init__(self):
        self.signum, self._old = None, {}

    def _handle(self, signum, frame):
        first = self.signum is None
        self.signum = signum if first or signum == signal.SIGTERM else self.signum
        children = multiprocessing.active_children()
        for p in children:
            try:
                os.kill(p.pid, signum if first else signal.SIGKILL)
            except (ProcessLookupError, TypeError):
                pass
        if not first:
            print(f"ndvq: second {signal.Signals(signum).name}: killed the ranks", file=sys.stderr)
            raise StoppedBySignal(self.signum, f"stopped by a second {signal.Signals(signum).name}; the ranks were "
                                               "killed without saving")



def launch_ranks(fabric, fn, args: tuple, run_dir: Path):
    """``fabric.launch(fn, *args)`` for spawned ranks, with signals forwarded (:class:`ForwardSignals`) and a
    rank's death turned into one :class:`~ndvq.errors.RankDiedError` line naming the rank.

    Bounded: when a rank dies, torch ends the others (SIGTERM, then SIGKILL after 30 s).
    """
    from torch.multiprocessing import ProcessExitedException, ProcessRaisedException

    with ForwardSignals() as fwd:
        try:
            return fabric.launch(fn, *args)
        except ProcessExitedException as e:
            if fwd.signum is not None:
                raise StoppedBySignal(fwd.signum, f"stopped by {signal.Signals(fwd.signum).name} before training "
                                                  "started; nothing was saved") from None
            how = f"was killed by {e.signal_name}" if e.signal_name else f"exited with code {e.exit_code}"
            raise RankDiedError(f"rank {e.error_index} (pid {e.error_pid}) {how}; the other ranks were stopped; "
                                f"{_resume_hint(run_dir)}") from None
        except ProcessRaisedException as e:
            lost = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")
            if any(m in str(e) for m in lost):
                raise RankDiedError(f"rank {e.error_index} lost its peers (another rank died): "
                                    f"{str(e).strip().splitlines()[-1][:160]}; {_resume_hint(run_dir)}") from None
            raise


def _resume_hint(run_dir: Path) -> str:
    last = checkpoints_dir(run_dir) / "last.ckpt"
    return (f"continue from {last} with: ndvq train --resume {run_dir}" if last.is_file()
            else "no checkpoint was written")
