"""StopFlag and ForwardSignals: which signal stopped the run, and the exit code it gives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from ndvq.run.signals import exit_code


def test_exit_codes_are_128_plus_the_signal():
    assert exit_code(signal.SIGINT) == 130 and exit_code(signal.SIGTERM) == 143


def in_main_thread(body: str) -> subprocess.CompletedProcess:
    """Run ``body`` in a fresh interpreter: signal handlers need the main thread (pytest-xdist runs tests in
    another one)."""
    code = ("import os, signal, sys, time, multiprocessing\n"
            "from ndvq.run.signals import ForwardSignals, StopFlag\n"
            "class OneProcess:\n    world_size = 1\n" + body)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def test_stop_flag_records_the_signal_and_restores_handlers():
    in_main_thread("""
before = signal.getsignal(signal.SIGTERM)
with StopFlag(escalate=False) as stop:
    os.kill(os.getpid(), signal.SIGTERM); time.sleep(0.01)
    stop.poll(OneProcess(), log_step=False)
    assert stop.requested and stop.signum == signal.SIGTERM
    os.kill(os.getpid(), signal.SIGINT); time.sleep(0.01)  # SIGTERM stays the reason
    assert stop.signum == signal.SIGTERM
assert signal.getsignal(signal.SIGTERM) is before
""")


def test_second_ctrl_c_escalates_only_on_one_process():
    in_main_thread("""
try:
    with StopFlag() as stop:
        os.kill(os.getpid(), signal.SIGINT); time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT); time.sleep(0.01)
    raise SystemExit("no KeyboardInterrupt")
except KeyboardInterrupt:
    pass
with StopFlag(escalate=False) as stop:  # a DDP rank: Ctrl-C arrives from the terminal and the launcher
    for _ in range(2):
        os.kill(os.getpid(), signal.SIGINT); time.sleep(0.01)
    assert stop.signum == signal.SIGINT
""")


def test_forward_signals_passes_a_signal_on_to_children():
    in_main_thread("""
if __name__ == "__main__":
    child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(30,))
    child.start()
    with ForwardSignals() as fwd:
        os.kill(os.getpid(), signal.SIGTERM); time.sleep(0.05)
        child.join(10)
        assert fwd.signum == signal.SIGTERM and child.exitcode == -signal.SIGTERM, child.exitcode
""")


def test_cli_maps_an_interrupted_result_to_its_code(monkeypatch, tmp_path):
    from ndvq import cli
    from ndvq.run import train as loop
    from ndvq.run.state import TrainResult

    monkeypatch.setattr(loop, "train", lambda cfg, **kw: TrainResult(tmp_path, 3, 0, "interrupted", signal=15))
    assert cli.main(["train", "train.doctor_warnings=false"]) == 143
    monkeypatch.setattr(loop, "train", lambda cfg, **kw: TrainResult(tmp_path, 3, 0, "interrupted", signal=2))
    assert cli.main(["train", "train.doctor_warnings=false"]) == 130


@pytest.mark.slow
def test_sigterm_before_the_loop_exits_143_without_a_traceback(tmp_path):
    """A SIGTERM that lands while a single-process run sets up: the run stops at its first step."""
    code = ("import os, signal, sys; sys.argv=['ndvq','train','train.max_steps=50','train.doctor_warnings=false',"
            "'model.videogpt.n_hiddens=16','model.videogpt.num_res_blocks=1','model.embedding_dim=8',"
            "'model.videogpt.norm_num_groups=8','model.videogpt.n_head=0','train.val_batches=1',"
            f"'run.root={tmp_path}','run.name=s','data.sample_patches=64','train.batch_size=4'];"
            "from ndvq.run import train as t; real=t.setup\n"
            "def setup(*a):\n    os.kill(os.getpid(), signal.SIGTERM); return real(*a)\n"
            "t.setup=setup\nfrom ndvq.cli import main; sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.returncode == 143, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
