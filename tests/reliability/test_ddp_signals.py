"""2-process CPU DDP (gloo, Fabric ddp_spawn): SIGTERM/SIGINT to the launcher, to one rank or to the process
group make rank 0 save a checkpoint and the job exit 143/130; a rank killed with SIGKILL ends the job in
bounded time with one line naming the rank."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from test_crash import finish, start, wait_for_step

from ndvq.run.checkpoint import load_checkpoint
from ndvq.run.rundir import read_metrics

DDP = ["train.devices=2", "train.accelerator=cpu", "train.batch_size=2", "train.max_steps=200"]
pytestmark = pytest.mark.slow


def ranks(pid_dir: Path, p, timeout: float = 120) -> list[int]:
    end = time.time() + timeout
    while time.time() < end:
        files = sorted(pid_dir.glob("rank*.pid"))
        if len(files) == 2:
            return [int(f.read_text()) for f in files]
        assert p.poll() is None, p.communicate()[1][-2000:]
        time.sleep(0.1)
    raise AssertionError("ranks did not start")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of an exited child counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def launch(tmp_path: Path):
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    p = start(tmp_path, "d", *DDP, sleep=0.2, env={"NDVQ_TEST_PID_DIR": str(pid_dir)}, start_new_session=True)
    pids = ranks(pid_dir, p)
    wait_for_step(tmp_path / "d", 2, p)
    return p, pids


def no_process_left(pids: list[int], timeout: float = 10) -> None:
    end = time.time() + timeout
    while any(alive(q) for q in pids) and time.time() < end:
        time.sleep(0.1)
    assert not any(alive(q) for q in pids), "a rank outlived the job"


@pytest.mark.parametrize("target,sig", [("launcher", signal.SIGTERM), ("rank1", signal.SIGTERM),
                                        ("group", signal.SIGINT)],
                         ids=["launcher-TERM", "rank1-TERM", "group-INT"])
def test_ddp_signal_saves_and_exits_with_its_code(tmp_path, target, sig):
    p, pids = launch(tmp_path)
    if target == "launcher":
        p.send_signal(sig)
    elif target == "group":
        os.killpg(p.pid, sig)
    else:
        os.kill(pids[int(target[-1])], sig)
    t0 = time.time()
    code, err = finish(p, timeout=120)
    assert code == 128 + sig, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    run = tmp_path / "d"
    last = max(r["step"] for r in read_metrics(run) if r["split"] == "train")
    assert load_checkpoint(run)["state"]["step"] == last  # rank 0 saved where the job stopped
    assert not (run / ".lock").exists()
    no_process_left(pids)
    print(f"FIGURE ddp {target} {signal.Signals(sig).name}: exit {code} in {time.time() - t0:.1f} s, saved step {last}")


def test_ddp_rank_death_ends_the_job_with_one_line(tmp_path):
    p, pids = launch(tmp_path)
    os.kill(pids[1], signal.SIGKILL)
    t0 = time.time()
    code, err = finish(p, timeout=120)
    took = time.time() - t0
    assert code == 1, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("ndvq:")]
    assert len(lines) == 1 and "rank 1" in lines[0] and "SIGKILL" in lines[0], err[-2000:]
    assert took < 60, took
    no_process_left(pids)
    assert not (tmp_path / "d" / ".lock").exists()
    print(f"FIGURE ddp rank death: exit {code} in {took:.1f} s: {lines[0]}")
