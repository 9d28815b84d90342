"""Activation checkpointing (MONAI's use_checkpoint) gives the same outputs and gradients for every backbone,
and the step-memory estimate runs on the meta device."""

from __future__ import annotations

import pytest
import torch

from ndvq.models import Autoencoder
from ndvq.models.backbones.checkpointing import estimate_step_memory, memory_advice

BACKBONES = {"ldm": {"ldm": {"channels": [4, 8], "num_res_blocks": 1, "norm_num_groups": 4,
                             "attention_levels": [False, True]}},
             "videogpt": {"videogpt": {"n_hiddens": 8, "num_res_blocks": 2, "downsample": 2, "n_head": 1}}}


def _grads(model, x):
    model.zero_grad()
    out = model(x)
    out.reconstruction.square().mean().backward()
    return out.reconstruction.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize("n_dims", [1, 2, 3])
def test_checkpointing_changes_nothing_but_memory(backbone, n_dims):
    torch.manual_seed(0)
    model = Autoencoder(n_dims=n_dims, in_channels=1, backbone=backbone, bottleneck="gaussian", embedding_dim=2,
                        **BACKBONES[backbone]).eval()  # eval: the latent is the mean, no sampling
    x = torch.randn(2, 1, *(8,) * n_dims)
    ref, ref_grads = _grads(model, x)
    model.set_activation_checkpointing(True)
    assert all(getattr(m, "activation_checkpointing", True) for m in model.modules()
               if hasattr(m, "activation_checkpointing"))
    got, grads = _grads(model, x)
    torch.testing.assert_close(got, ref)
    assert grads.keys() == ref_grads.keys()
    for k in grads:
        torch.testing.assert_close(grads[k], ref_grads[k], rtol=1e-4, atol=1e-6)


def test_estimate_grows_with_the_batch_and_advises():
    model = Autoencoder(n_dims=2, in_channels=1, backbone="ldm", bottleneck="gaussian", **BACKBONES["ldm"])
    small, large = (estimate_step_memory(model, None, (b, 1, 32, 32)) for b in (1, 4))
    assert 0 < small["activations"] < large["activations"] and small["parameters"] == large["parameters"]
    assert next(model.parameters()).device.type == "cpu"  # the original is untouched
    assert memory_advice(large, large["total"] + 1) is None
    line = memory_advice(large, large["total"] // 2)
    assert "train.activation_checkpointing=true" in line and "\n" not in line
