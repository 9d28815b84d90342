"""Two-process CPU DDP (gloo): codebooks stay identical across ranks, even with disjoint codes per rank.

Each rank draws data from its own clusters (rank 0 around +6, rank 1 around -6), so the ranks' batches
use disjoint codes. After a few training steps every buffer and parameter must be bit-identical on both
ranks (except the rank-local replay buffer of recent outputs), counts must be global, and eval-mode forwards (run on rank 0 only) must not issue collectives.
"""

import datetime
import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ndvq.quantizers import build_quantizer

CONFIGS = {
    "ema_kmeans_restart": ("vq", dict()),
    "kmeans_2_batches": ("vq", dict(kmeans_batches=2, kmeans_iters=3)),
    "restart_replay": ("vq", dict(restart="replay", replay_size=64, restart_threshold=5.0)),
    "gradient_restart": ("vq", dict(update="gradient", init="random", restart="batch")),
    "uniform_absolute_tokens": ("vq", dict(restart_sampling="uniform", restart_threshold=1.0, ema_tokens_per_code=2.0)),
    "grow_accumulate": ("vq", dict(grow_to=48, grow_at_step=2, ema_accumulate_steps=2, cosine=True)),
    "residual": ("residual", dict(num_quantizers=2, cosine=False)),
    "grouped": ("grouped", dict(groups=2)),
    "lfq": ("lfq", dict()),
}
STEPS = 5


def _worker(rank: int, world: int, init_file: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=30))
    try:
        for name, (kind, opts) in CONFIGS.items():
            torch.manual_seed(0)  # same initial weights on both ranks (as DDP guarantees)
            q = build_quantizer(kind, 8, 32, **opts).train()
            torch.manual_seed(100 + rank)  # different data and sampling per rank
            sign = 1.0 if rank == 0 else -1.0
            centers = sign * (6 + torch.rand(8, 8))
            for _ in range(STEPS):
                z = centers[torch.randint(0, 8, (64 + 16 * rank,))] + 0.1 * torch.randn(64 + 16 * rank, 8)
                out = q(z)
            assert float(out.counts.sum()) == (64 + 80) * q.n_codebooks, f"{name}: counts not summed over ranks"
            for key, value in q.state_dict().items():
                if key.split(".")[-1] in ("replay", "replay_weight"):  # each rank's own recent outputs
                    continue
                value = value.float().contiguous()
                gathered = [torch.empty_like(value) for _ in range(world)]
                dist.all_gather(gathered, value)
                assert torch.equal(gathered[0], gathered[1]), f"{name}: '{key}' differs across ranks"
            if rank == 0:  # eval on one rank only: would hang (and time out) if it issued a collective
                q.eval()
                q(torch.randn(10, 8))
            dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_keeps_codebooks_identical(tmp_path):
    init_file = str(tmp_path / "pg_init")
    ctx = mp.start_processes(_worker, args=(2, init_file), nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("DDP quantizer test hung (ranks did not finish within 120 s)")
