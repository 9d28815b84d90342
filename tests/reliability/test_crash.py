"""Crashes and signals, single process: ``kill -9`` mid-run and mid-checkpoint-write resume to the curve of a
straight run with every step recorded once; SIGTERM/SIGINT save a checkpoint and exit 143/130."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from reliability_helpers import HERE, TINY

from ndvq.run.checkpoint import load_checkpoint
from ndvq.run.rundir import read_metrics

SCRIPT = HERE / "train_script.py"
STEPS, EVERY = ["train.max_steps=24", "train.ckpt_interval=8", "train.log_interval=1", "train.val_interval=8"], 8
pytestmark = pytest.mark.slow


def start(root: Path, name: str, *extra: str, sleep: float = 0.0, env: dict | None = None, resume: bool = False,
          **popen) -> subprocess.Popen:
    args = ["train", "--resume", str(root / name)] if resume else ["train", *TINY, *STEPS, f"run.root={root}",
                                                                    f"run.name={name}"]
    e = {**os.environ, "NDVQ_TEST_STEP_SLEEP": str(sleep), **(env or {})}
    e["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[2] / "src"), e.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, str(SCRIPT), *args, *extra], env=e, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def finish(p: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    _, err = p.communicate(timeout=timeout)
    return p.returncode, err


def wait_for_step(run: Path, step: int, p: subprocess.Popen, timeout: float = 120) -> int:
    """Poll metrics.jsonl until a train record at ``step`` or later exists; return the newest step."""
    end = time.time() + timeout
    while time.time() < end:
        steps = [r["step"] for r in read_metrics(run) if r.get("split") == "train"]
        if steps and steps[-1] >= step:
            return steps[-1]
        assert p.poll() is None, p.communicate()[1][-2000:]
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached")


def curve(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(run) if r["split"] == "train"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("straight")
    code, err = finish(start(root, "s"))
    assert code == 0, err[-2000:]
    return root / "s"


def check_resumed(run: Path, straight: Path) -> None:
    recs = read_metrics(run)
    for split in ("train", "val"):
        steps = [r["step"] for r in recs if r["split"] == split]
        assert steps == sorted(set(steps)), f"duplicate {split} records: {steps}"
    assert curve(run) == curve(straight)  # identical losses, every step once
    times = [r["time"] for r in recs]
    assert times == sorted(times), "time restarted after the resume"
    assert not list((run / "checkpoints").glob(".*.tmp")), "temporary checkpoint left behind"
    assert not (run / ".lock").exists()


def test_kill9_mid_run_resumes_to_the_same_curve(tmp_path, straight):
    p = start(tmp_path, "k", sleep=0.15)
    last = wait_for_step(tmp_path / "k", 13, p)
    p.kill()
    p.wait()
    saved = load_checkpoint(tmp_path / "k")["state"]["step"]
    lost = max(r["step"] for r in read_metrics(tmp_path / "k") if r["split"] == "train") - saved
    assert saved == 8 and 0 <= lost <= EVERY, (saved, last)
    code, err = finish(start(tmp_path, "k", resume=True))
    assert code == 0, err[-2000:]
    check_resumed(tmp_path / "k", straight)
    (tmp_path / "figures.json").write_text(json.dumps({"steps_lost": lost}))
    print(f"FIGURE kill9 steps_lost={lost} checkpoint_interval={EVERY}")


def test_kill9_mid_checkpoint_write(tmp_path, straight):
    p = start(tmp_path, "w", env={"NDVQ_TEST_CRASH_CKPT": "2"})  # dies writing the step-16 checkpoint
    code, _ = finish(p)
    assert code == -signal.SIGKILL
    run = tmp_path / "w"
    tmp = list((run / "checkpoints").glob(".last.ckpt.*.tmp"))
    assert tmp, "the half-written checkpoint should be a temp file"
    assert load_checkpoint(run)["state"]["step"] == 8  # the previous checkpoint is intact
    code, err = finish(start(tmp_path, "w", resume=True))
    assert code == 0, err[-2000:]
    check_resumed(run, straight)


def test_sigterm_saves_and_exits_143(tmp_path, sig=signal.SIGTERM):
    """SIGINT takes the same path (exit 130): tests/run/test_signals.py and the DDP group test."""
    p = start(tmp_path, "g", sleep=0.15)
    wait_for_step(tmp_path / "g", 5, p)
    p.send_signal(sig)
    code, err = finish(p)
    assert code == 128 + sig, err[-2000:]
    assert "Traceback" not in err
    run = tmp_path / "g"
    last = max(r["step"] for r in read_metrics(run) if r["split"] == "train")
    assert load_checkpoint(run)["state"]["step"] == last  # saved where it stopped: no step lost
    assert not (run / ".lock").exists()


def test_concurrent_writers_one_refused(tmp_path):
    a = start(tmp_path, "c", "train.seed=1", sleep=0.1)
    b = start(tmp_path, "c", "train.seed=2", sleep=0.1)
    (ca, ea), (cb, eb) = finish(a), finish(b)
    assert sorted([ca, cb]) == [0, 2], (ea[-1500:], eb[-1500:])
    refused = ea if ca == 2 else eb
    assert "in use by ndvq train (pid" in refused or "already holds a run" in refused, refused
    assert "Traceback" not in refused
    steps = [r["step"] for r in read_metrics(tmp_path / "c") if r["split"] == "train"]
    assert steps == list(range(1, 25))
    seeds = json.dumps(open(tmp_path / "c" / "config.yaml").read())
    assert ("seed: 1" in seeds) == (ca == 0)
