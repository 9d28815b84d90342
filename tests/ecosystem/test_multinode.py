"""``train.num_nodes=2``: two "nodes" on 127.0.0.1, each launched by torchrun (static rendezvous, gloo),
give the loss curve of one process with the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ndvq.run.rundir import read_metrics

SCRIPT = Path(__file__).parent / "multinode_script.py"
LR = 3e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK")}
    return {**env, "PYTHONPATH": os.pathsep.join([src, env.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}


def _curve(run: Path) -> tuple[list, list]:
    recs = read_metrics(run / "metrics.jsonl")
    train = [(r["step"], r["loss"], r["lr"]) for r in recs if r["split"] == "train"]
    val = [(r["step"], r["recon_loss"]) for r in recs if r["split"] == "val"]
    return train, val


@pytest.mark.slow
def test_two_nodes_on_loopback_match_one_process(tmp_path):
    port = _free_port()
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1", f"--node-rank={i}",
         "--master-addr=127.0.0.1", f"--master-port={port}", str(SCRIPT), str(tmp_path), "two",
         "train.num_nodes=2", "train.batch_size=2", f"train.learning_rate={LR}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()) for i in range(2)]
    try:
        outs = [p.communicate(timeout=400) for p in nodes]
    finally:
        for p in nodes:
            p.kill()
    for p, (_, err) in zip(nodes, outs):
        assert p.returncode == 0, err[-3000:]
    assert "RESULT 6 finished" in outs[0][0]
    # one process, the same global batch (2 nodes x 1 device x 2) and the learning rate the two-node run
    # used: train.scale_lr_by_world_size multiplies it by the world size, nodes x devices = 2
    one = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "one", "train.batch_size=4",
                          f"train.learning_rate={2 * LR}"], capture_output=True, text=True, timeout=400, env=_env())
    assert one.returncode == 0, one.stderr[-3000:]
    (two_train, two_val), (one_train, one_val) = _curve(tmp_path / "two"), _curve(tmp_path / "one")
    assert [s for s, _, _ in two_train] == list(range(1, 7)) and [s for s, _ in two_val] == [3, 6]
    assert all(lr == pytest.approx(2 * LR) for _, _, lr in two_train)
    assert [loss for _, loss, _ in two_train] == pytest.approx([loss for _, loss, _ in one_train], rel=1e-4)
    assert [v for _, v in two_val] == pytest.approx([v for _, v in one_val], rel=1e-4)
    assert two_train[-1][1] < two_train[0][1]  # it learns
