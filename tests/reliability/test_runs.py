"""Run directories that cannot be corrupted (in-process): the lock and its stale takeover, --overwrite, failed
starts that leave nothing, the truthful non-finite stop, checkpoint modes, codes round trip, memory estimate."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch
from reliability_helpers import TINY, run_cli

from ndvq import build
from ndvq.config import load_config
from ndvq.errors import CodesError, ConfigError, NonFiniteLossError, RunInUseError
from ndvq.run import train as loop
from ndvq.run.checkpoint import load_checkpoint
from ndvq.run.codesfile import check_codes_file, codes_fingerprint
from ndvq.run.infer import load_run_model
from ndvq.run.rundir import RunLock, check_run_name, read_metrics


def cfg(tmp_path, *extra):
    return load_config(None, TINY + [f"run.root={tmp_path}", "run.name=r", *extra])


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_lock_refuses_a_live_holder_and_takes_over_a_stale_one(tmp_path, capsys):
    run = tmp_path / "r"
    with RunLock(run) as lock:
        held = json.loads(lock.path.read_text())
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname() and held["started"]
        with pytest.raises(RunInUseError, match=f"pid {os.getpid()}"):
            RunLock(run).acquire()
    assert not (run / ".lock").exists()
    (run / ".lock").write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname(), "started": "x"}))
    with RunLock(run):
        pass
    assert "stale lock" in capsys.readouterr().err
    (run / ".lock").write_text("garbage")
    with RunLock(run):
        pass


def test_lock_of_another_host_is_respected(tmp_path):
    (tmp_path / ".lock").write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "x"}))
    with pytest.raises(RunInUseError, match="elsewhere"):
        RunLock(tmp_path).acquire()


def test_stale_lock_takeover_trains(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / ".lock").write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname(), "started": "x"}))
    assert run_cli(["train", *TINY, f"run.root={tmp_path}", "run.name=r"]) == 0
    assert "taking over the stale lock" in capsys.readouterr().err
    assert not (tmp_path / "r" / ".lock").exists()


@pytest.mark.parametrize("name", ["../up", "/abs", "a/b", "..", ".", "  "])
def test_run_name_must_be_plain(name):
    with pytest.raises(ConfigError, match="run.name"):
        check_run_name(name)


def test_failed_start_leaves_no_run_directory(tmp_path):
    with pytest.raises(ConfigError, match="in_channels"):
        loop.train(cfg(tmp_path / "runs", "model.in_channels=1"))
    assert not (tmp_path / "runs").exists()


def test_checkpoints_and_facts_get_the_run_directory_mode(tmp_path):
    res = loop.train(cfg(tmp_path))
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [*res.run_dir.glob("*.*"), *res.run_dir.glob("checkpoints/*")]}
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_overwrite_starts_afresh_and_resume_is_refused_with_it(tmp_path):
    loop.train(cfg(tmp_path))
    with pytest.raises(ConfigError, match="--overwrite"):
        loop.train(cfg(tmp_path))
    res = loop.train(cfg(tmp_path, "train.max_steps=2"), overwrite=True)
    assert [r["step"] for r in read_metrics(res.run_dir) if r["split"] == "train"] == [2]
    with pytest.raises(ConfigError, match="--overwrite"):
        loop.train(cfg(tmp_path), resume=res.run_dir, overwrite=True)


def _poison(monkeypatch, first_bad: int):
    real = build.build_model

    def build_model(c):
        net, calls = real(c), [0]
        forward = net.forward

        def poisoned(x):
            out = forward(x)
            if net.training:
                calls[0] += 1
                if calls[0] >= first_bad:
                    out.reconstruction = out.reconstruction * float("nan")
            return out

        net.forward = poisoned
        return net

    monkeypatch.setattr(build, "build_model", build_model)


def test_nonfinite_stop_names_the_intact_checkpoint(tmp_path, monkeypatch):
    _poison(monkeypatch, 6)
    c = cfg(tmp_path, "train.max_steps=40", "train.ckpt_interval=4", "train.val_interval=100",
            "train.max_nonfinite_steps=3")
    with pytest.raises(NonFiniteLossError) as e:
        loop.train(c)
    msg = str(e.value)
    assert f"{tmp_path / 'r' / 'checkpoints' / 'last.ckpt'} (step 4)" in msg and "--resume" in msg
    assert "precision" not in msg  # the run already uses 32-bit
    assert "train.learning_rate (now" in msg
    assert load_checkpoint(tmp_path / "r")["state"]["step"] == 4
    monkeypatch.undo()
    res = loop.train(cfg(tmp_path, "train.max_steps=6"), resume=tmp_path / "r")  # resumable
    assert res.step == 6


def test_nonfinite_stop_without_checkpoint_suggests_overwrite(tmp_path, monkeypatch):
    _poison(monkeypatch, 1)
    c = cfg(tmp_path, "train.max_steps=40", "train.ckpt_interval=100", "train.val_interval=100",
            "train.max_nonfinite_steps=3", "train.grad_clip=null", "train.log_interval=1")
    with pytest.raises(NonFiniteLossError, match="no checkpoint was written before it: start afresh with --overwrite"):
        loop.train(c)
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="no checkpoint to resume.*--overwrite"):
        loop.train(cfg(tmp_path))
    assert loop.train(cfg(tmp_path), overwrite=True).stopped == "finished"


def test_codes_round_trip_and_fingerprint(trained, tmp_path):
    model = load_run_model(trained["run"]).model
    check_codes_file(trained["codes"], model)  # the file encode wrote passes
    with np.load(trained["codes"]) as z:
        assert str(z["fingerprint"]) == codes_fingerprint(model)
    assert run_cli(["decode", trained["run"], trained["codes"], "--out", tmp_path / "dec"]) == 0
    assert list((tmp_path / "dec").iterdir())
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    with pytest.raises(CodesError, match="fingerprint"):
        check_codes_file(trained["codes"], model)


def test_memory_estimate_in_start_summary_text_and_refusal():
    est = build.estimate_memory(load_config(None, []))
    assert est.n_parameters > 0 and est.bytes_total >= 16 * est.n_parameters
    assert "GB" in est.text() or "MB" in est.text()
    with pytest.raises(ConfigError, match=r"GB.*model.n_codes=100000000000"):
        build.check_memory(load_config(None, ["model.n_codes=1e11"]))


def test_resume_drops_records_after_the_checkpoint_and_continues_time(tmp_path):
    res = loop.train(cfg(tmp_path, "train.max_steps=8", "train.log_interval=1", "train.ckpt_interval=4"))
    ck = res.run_dir / "checkpoints" / "last.ckpt"
    state = torch.load(ck, weights_only=True)
    state["state"]["step"], state["state"]["batch_in_epoch"] = 4, 4  # pretend it crashed after step 8, saved at 4
    state["state"]["elapsed"] = 1000.0
    torch.save(state, ck)
    loop.train(cfg(tmp_path, "train.max_steps=8", "train.log_interval=1", "train.ckpt_interval=4"), resume=res.run_dir)
    recs = [r for r in read_metrics(res.run_dir) if r["split"] == "train"]
    assert [r["step"] for r in recs] == list(range(1, 9))
    assert all(r["time"] >= 1000 for r in recs[4:])
