"""eval / encode / decode through the Python API for the hierarchical VQ-VAE and the KL-VAE, plus
SIGTERM handling (the per-modality CLI round trips are in tests/test_cli.py)."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch
from train_helpers import TINY

from ndvq.config import load_config
from ndvq.run import train as loop
from ndvq.run.checkpoint import load_checkpoint
from ndvq.run.infer import decode, encode, evaluate

KINDS = {
    "hierarchical": ["model.kind=hierarchical", "model.videogpt.downsample=[2,2]", "model.top.downsample=[2,2]",
                     "model.top.n_codes=8"],
    "klvae": ["model.kind=klvae", "model.ldm.channels=[8,16]", "model.ldm.attention_levels=[false,false]",
              "model.ldm.norm_num_groups=4", "model.ldm.num_res_blocks=1", "model.embedding_dim=2"],
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_eval_encode_decode(kind, tmp_path, tiny_data):
    res = loop.train(load_config(None, TINY + KINDS[kind] + [f"run.root={tmp_path}", "run.name=r",
                                                              "train.max_steps=2", "train.val_interval=2"]))
    metrics = evaluate(res.run_dir, split="val")
    assert metrics["n_items"] == 8 and np.isfinite(metrics["psnr"]) and np.isfinite(metrics["ssim"])
    npz = encode(res.run_dir, tmp_path / "codes.npz", split="val")
    z = np.load(npz, allow_pickle=False)
    if kind == "hierarchical":
        top, bottom = z["codes_0"], z["codes_1"]
        assert top.shape == (8, 4, 4) and bottom.shape == (8, 8, 8) and top.max() < 8 and bottom.max() < 32
        # fixed-length rate: 16 top codes x 3 bits + 64 bottom codes x 5 bits over 3 x 16 x 16 inputs
        assert metrics["bits_per_element"] == pytest.approx((16 * 3 + 64 * 5) / 768)
    else:
        assert z["latents"].shape == (8, 2, 8, 8) and z["latents"].dtype == np.float32
        assert "bits_per_element" not in metrics and "kl_loss" in metrics
    files = decode(res.run_dir, npz, tmp_path / "out")
    assert len(files) >= 8 and all(p.exists() for p in files)


def test_sigterm_saves_a_checkpoint_and_stops(tmp_path, tiny_data):
    def term(step, metrics):
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    res = loop.train(load_config(None, TINY + [f"run.root={tmp_path}", "run.name=r", "train.max_steps=50",
                                               "train.val_interval=3", "train.ckpt_interval=100"]), on_validation=term)
    assert res.stopped == "interrupted" and res.step == 3
    assert load_checkpoint(res.run_dir)["state"]["step"] == 3
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is restored
    assert torch.is_tensor(load_checkpoint(res.run_dir)["rng"]["torch"])
