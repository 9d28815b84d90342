"""``StopFlag``: SIGINT/SIGTERM ask the training loop to save a checkpoint and return.

Example:
    >>> with StopFlag() as stop:
    ...     stop.requested
    False
"""

from __future__ import annotations

import signal
import threading

import torch

__all__ = ["StopFlag"]


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
        """Update :attr:`requested` (an all-reduce over ranks at log steps under DDP)."""
        if fabric.world_size == 1:
            self.requested = self._signalled
        elif log_step:
            flag = fabric.all_reduce(torch.tensor(float(self._signalled), device=fabric.device), reduce_op="sum")
            self.requested = bool(flag.item() > 0)

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
