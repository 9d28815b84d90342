"""Atomic checkpoints, safe loading, RNG round trip, keep-N best, the resumable sampler."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from ndvq.errors import CheckpointError
from ndvq.run.checkpoint import (
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    update_best,
)
from ndvq.run.rundir import find_checkpoint
from ndvq.run.sampler import EpochSampler


def _state(v: float) -> dict:
    return {"model": {"w": torch.full((64, 64), v)}, "step": int(v)}


def test_crash_mid_write_keeps_previous_last(tmp_path, monkeypatch):
    last = tmp_path / "checkpoints" / "last.ckpt"
    save_checkpoint(_state(1.0), last)

    def broken_save(obj, f):  # writes half a file, then the process "dies"
        f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_state(2.0), last)
    monkeypatch.undo()
    assert load_checkpoint(last)["step"] == 1
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]  # temp file removed


def test_killed_process_mid_write_keeps_previous_last(tmp_path):
    last = tmp_path / "last.ckpt"
    save_checkpoint(_state(1.0), last)
    code = textwrap.dedent(f"""
        import os, torch
        from ndvq.run.checkpoint import save_checkpoint
        def dying_save(obj, f):
            f.write(b"garbage" * 1000); f.flush(); os._exit(9)   # hard kill mid-write
        torch.save = dying_save
        save_checkpoint({{"model": {{}}, "step": 2}}, {str(last)!r})
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert r.returncode == 9
    assert torch.equal(load_checkpoint(last)["model"]["w"], torch.ones(64, 64))


def test_load_is_weights_only(tmp_path):
    p = tmp_path / "evil.ckpt"
    torch.save({"model": {}, "obj": random.Random()}, p)  # an arbitrary Python object
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(p)


def test_find_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        find_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        find_checkpoint(tmp_path)


def test_rng_state_round_trip(tmp_path):
    state = rng_state()
    p = save_checkpoint({"model": {}, "rng": state}, tmp_path / "r.ckpt")
    a = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(load_checkpoint(p)["rng"])
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_update_best_keeps_n(tmp_path):
    best = []
    for step, v in [(1, 0.5), (2, 0.3), (3, 0.4), (4, 0.9), (5, 0.1)]:
        best, path = update_best(best, v, step, tmp_path, keep=2)
        if path is not None:
            path.write_text("x")
    assert [b[1] for b in best] == ["best-step0000005.ckpt", "best-step0000002.ckpt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best-step0000002.ckpt", "best-step0000005.ckpt"]
    assert update_best(best, float("nan"), 6, tmp_path, 2)[1] is None


def test_epoch_sampler_resume_and_shards():
    full = list(EpochSampler(10, seed=3, epoch=1))
    assert sorted(full) == list(range(10)) and full != list(range(10))
    assert list(EpochSampler(10, seed=3, epoch=1, skip=4)) == full[4:]
    assert list(EpochSampler(10, seed=3, epoch=2)) != full
    r0, r1 = EpochSampler(9, 0, 0, 0, 2), EpochSampler(9, 0, 0, 1, 2)
    assert len(r0) == len(r1) == 5 and set(r0) | set(r1) == set(range(9))
    assert list(EpochSampler(5, 0, 0, 1, 2, shuffle=False, pad=False)) == [1, 3]
