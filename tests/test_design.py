"""Issue 12's contracts end to end: the VQGAN-style example config trains, loss weights may change on
resume while the architecture may not, and eval's bits per code come from the model's own codebook sizes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from ndvq.cli import main
from ndvq.config import load_config
from ndvq.errors import CheckpointError
from ndvq.run.infer import evaluate
from ndvq.run.train import train

ROOT = Path(__file__).resolve().parents[1]
TINY_DATA = ["data.kind=samples", "data.patch_size=[16,16]", "data.sample_patches=48"]
TINY_TRAIN = ["train.batch_size=4", "train.val_batches=1", "train.log_interval=1", "train.sample_interval=1000",
              "train.doctor_warnings=false", "train.warmup_steps=0"]
TINY_VQ = ["model.videogpt.n_hiddens=16", "model.videogpt.num_res_blocks=1", "model.videogpt.n_head=0",
           "model.videogpt.norm=group", "model.videogpt.norm_num_groups=8", "model.embedding_dim=8"]


def _cfg(tmp_path: Path, name: str, extra: list[str]):
    return load_config(None, TINY_DATA + TINY_TRAIN + [f"run.root={tmp_path}", f"run.name={name}", *extra])


@pytest.mark.slow
def test_vqgan_example_config_trains(tmp_path):
    """configs/image/vqgan.yaml: the LDM backbone with a VQ bottleneck and an adversarial loss."""
    import numpy as np
    from PIL import Image

    data = tmp_path / "images"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(data / f"{i}.png")
    small = ["model.embedding_dim=8", "model.n_codes=16", "model.ldm.channels=[8,16]", "model.ldm.norm_num_groups=4",
             "model.ldm.num_res_blocks=1", "model.ldm.attention_levels=[false,false]", "loss.perceptual_weight=0",
             "loss.adversarial_warmup_epochs=0", "loss.disc_channels=8", "loss.disc_layers=2",
             "data.resolution=[16,16]", "data.augment=false", "train.max_steps=3", "train.batch_size=2",
             "train.val_interval=3", "train.ckpt_interval=3", "train.num_workers=0", "train.warmup_steps=0"]
    code = main(["train", "-c", str(ROOT / "configs" / "image" / "vqgan.yaml"), f"data.root={data}",
                 f"run.root={tmp_path / 'runs'}", "run.name=r", *small])
    assert code == 0
    run = tmp_path / "runs" / "r"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert (cfg["model"]["backbone"], cfg["model"]["bottleneck"]) == ("ldm", "vq")
    records = [yaml.safe_load(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("disc_loss" in r for r in records if r["split"] == "train")  # the discriminator trained


@pytest.mark.slow
def test_resume_accepts_a_new_loss_weight_and_refuses_a_new_architecture(tmp_path):
    kl = ["model.kind=klvae", "model.embedding_dim=2", "model.ldm.channels=[8,16]", "model.ldm.norm_num_groups=4",
          "model.ldm.num_res_blocks=1", "model.ldm.attention_levels=[false,false]",
          "model.ldm.with_encoder_nonlocal_attn=false", "model.ldm.with_decoder_nonlocal_attn=false"]
    first = train(_cfg(tmp_path, "kl", kl + ["train.max_steps=2", "train.val_interval=2"]))
    resumed_cfg = load_config(first.run_dir / "config.yaml", ["train.max_steps=4", "loss.kl_weight=0.001"])
    res = train(resumed_cfg, resume=first.run_dir)
    assert res.step == 4
    assert yaml.safe_load((first.run_dir / "config.yaml").read_text())["loss"]["kl_weight"] == 0.001

    vq = train(_cfg(tmp_path, "vq", TINY_VQ + ["model.n_codes=16", "train.max_steps=2", "train.val_interval=2"]))
    bigger = load_config(vq.run_dir / "config.yaml", ["train.max_steps=4", "model.n_codes=32"])
    with pytest.raises(CheckpointError, match="model.n_codes=16"):
        train(bigger, resume=vq.run_dir)
    assert yaml.safe_load((vq.run_dir / "config.yaml").read_text())["model"]["n_codes"] == 16  # untouched


@pytest.mark.slow
def test_lfq_eval_counts_bits_of_its_own_codebook(tmp_path):
    """An LFQ run with model.n_codes=512: eval charges log2(512) = 9 bits per code (not 2**len(levels))."""
    res = train(_cfg(tmp_path, "lfq", TINY_VQ + ["model.bottleneck=lfq", "model.n_codes=512", "train.max_steps=2",
                                                   "train.val_interval=2"]))
    m = evaluate(res.run_dir, split="val")
    codes_per_item, elements_per_item = (16 // 4) ** 2, 3 * 16 * 16  # videogpt default downsample [4, 4]
    assert m["bits_per_element"] == pytest.approx(codes_per_item * math.log2(512) / elements_per_item)
