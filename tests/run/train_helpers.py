"""Shared helpers of the training tests: tiny model overrides and tiny in-memory data."""

from __future__ import annotations

import torch

TINY = ["model.videogpt.n_hiddens=16", "model.videogpt.num_res_blocks=1", "model.embedding_dim=8", "model.n_codes=32",
        "model.videogpt.n_head=0", "model.videogpt.norm=group", "model.videogpt.norm_num_groups=8",
        "model.videogpt.downsample=[4,4]",
        "train.batch_size=4", "train.sample_interval=1000", "train.num_workers=0", "train.doctor_warnings=false"]


class TinyImages(torch.utils.data.Dataset):
    """Random smooth 16x16 RGB images in [-1, 1] (deterministic per split)."""

    modality, n_dims, channels, data_range, skipped = "image", 2, 3, 2.0, []

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        low = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
        self.x = torch.nn.functional.interpolate(low, size=(16, 16), mode="bilinear", align_corners=False)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"data": self.x[i], "index": i}

    def item_info(self, i):
        return {"path": f"img{i:03d}.png"}
