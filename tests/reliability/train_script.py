"""``python train_script.py ARGS...``: ``ndvq ARGS`` with hooks for the crash tests (set by environment).

- ``NDVQ_TEST_STEP_SLEEP=s``: sleep ``s`` seconds after every training step (a window to signal in).
- ``NDVQ_TEST_PID_DIR=dir``: every rank writes ``dir/rank<N>.pid`` once set up.
- ``NDVQ_TEST_CRASH_CKPT=n``: the n-th write of ``last.ckpt`` writes half its bytes, then the process
  kills itself with SIGKILL (a crash in the middle of a checkpoint write).

The hooks are module-level, so spawned DDP ranks (which import this file as ``__mp_main__``) get them too.
"""

import io
import os
import signal
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from ndvq.run import checkpoint as ck  # noqa: E402
from ndvq.run import train as loop  # noqa: E402

_SLEEP = float(os.environ.get("NDVQ_TEST_STEP_SLEEP", "0"))
_PID_DIR = os.environ.get("NDVQ_TEST_PID_DIR")
_CRASH = int(os.environ.get("NDVQ_TEST_CRASH_CKPT", "0"))
_step, _setup, _save = loop.train_step, loop.setup, torch.save
_writes = [0]


def _slow_step(s, micro):
    out = _step(s, micro)
    time.sleep(_SLEEP)
    return out


def _setup_and_record(fabric, *args):
    s = _setup(fabric, *args)
    Path(_PID_DIR, f"rank{fabric.global_rank}.pid").write_text(str(os.getpid()))
    return s


def _crashing_save(obj, f, *args, **kwargs):
    target = os.readlink(f"/proc/self/fd/{f.fileno()}") if hasattr(f, "fileno") else ""
    if ".last.ckpt." not in target:
        return _save(obj, f, *args, **kwargs)
    _writes[0] += 1
    if _writes[0] < _CRASH:
        return _save(obj, f, *args, **kwargs)
    buf = io.BytesIO()
    _save(obj, buf)
    f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    f.flush()
    os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


if _SLEEP:
    loop.train_step = _slow_step
if _PID_DIR:
    loop.setup = _setup_and_record
if _CRASH:
    ck.torch.save = _crashing_save

if __name__ == "__main__":
    torch.set_num_threads(1)
    from ndvq.cli import main

    sys.exit(main(sys.argv[1:]))
