"""Run by test_multinode.py: ``python multinode_script.py OUT NAME [key=value ...]`` trains the tiny model on
tiny in-memory images (alone, or as one "node" of a torchrun launch) and prints ``RESULT step stopped``."""

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "run"))

import torch  # noqa: E402
from train_helpers import TINY, TinyImages  # noqa: E402

from ndvq import build  # noqa: E402
from ndvq.config import load_config  # noqa: E402
from ndvq.run import train as loop  # noqa: E402

build.build_dataset = lambda cfg, split, stats_dir=None, pad_multiple=None: TinyImages(
    24 if split == "train" else 8, 0 if split == "train" else 1)

# the same curve for any world size: no data-dependent codebook init or restarts (those read one rank's
# batch), group norm (TINY), no attention dropout; the global batch is train.batch_size x world size
SAME_CURVE = ["model.quantizer.init=random", "model.quantizer.restart=none", "train.accelerator=cpu",
              "train.max_steps=6", "train.log_interval=1", "train.val_interval=3", "train.val_batches=1",
              "train.ckpt_interval=6", "train.lr_schedule=constant", "train.warmup_steps=0"]

if __name__ == "__main__":
    torch.set_num_threads(1)
    out, name, overrides = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    cfg = load_config(None, TINY + SAME_CURVE + [f"run.root={out}", f"run.name={name}", *overrides])
    result = loop.train(cfg)
    print("RESULT", result.step, result.stopped, flush=True)
