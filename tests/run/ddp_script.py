"""Run by test_ddp.py as `python ddp_script.py OUT_DIR`: 2-process CPU DDP training on tiny data.

Module-level patches run again in the spawned workers (they import this file as __mp_main__): the
dataset is the tiny in-memory one, and each rank dumps its model state after each validation.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from train_helpers import TINY, TinyImages  # noqa: E402

from ndvq import build  # noqa: E402
from ndvq.config import load_config  # noqa: E402
from ndvq.run import train as loop  # noqa: E402

OUT = Path(sys.argv[1])
build.build_dataset = lambda cfg, split, stats_dir=None, pad_multiple=None: TinyImages(24 if split == "train" else 8, 0 if split == "train" else 1)
_validate = loop.validate


def _validate_and_dump(session):
    out = _validate(session)
    state = {k: v.detach().clone() for k, v in session.net.state_dict().items()}
    torch.save(state, OUT / f"rank{session.fabric.global_rank}.pt")
    return out


loop.validate = _validate_and_dump

if __name__ == "__main__":
    torch.set_num_threads(1)
    cfg = load_config(None, TINY + [f"run.root={OUT}", "run.name=ddp", "train.devices=2", "train.accelerator=cpu",
                                    "train.max_steps=3", "train.log_interval=1", "train.val_interval=3",
                                    "train.batch_size=2", "train.learning_rate=3e-4",
                                    "train.lr_schedule=constant", "train.warmup_steps=0"])
    result = loop.train(cfg)
    print("RESULT", result.step, result.stopped, result.run_dir)
