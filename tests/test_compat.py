"""ndvq.NDimVQVAE as a drop-in for nd_vq_vae.NDimVQVAE (the reference package is not installed here:
its README example is reproduced verbatim below and run with only the import line changed)."""

from __future__ import annotations

import types

import pytest
import torch

import ndvq
from ndvq import NDimVQVAE

# The "Usage" section of the nd_vq_vae 1.0.3 README (PyPI METADATA), verbatim. It uses `torch`,
# `args.downsample` and `batch_size` without defining them; the test supplies those three.
REFERENCE_README_EXAMPLE = '''
from nd_vq_vae import NDimVQVAE

sequence_length = 3
channels = 3
res = (128, 256)
input_shape = (channels, sequence_length, res[0], res[1])

model = NDimVQVAE(
    embedding_dim=64,
    n_codes=64,
    n_dims=3,
    downsample=args.downsample,
    n_hiddens=64,
    n_res_layers=2,
    codebook_beta=0.10,
    input_shape=input_shape,
)

x = torch.randn(batch_size, *input_shape)
recon_loss, x_recon, vq_output = model(x)
'''


def test_reference_readme_example_runs_with_only_the_import_changed():
    code = REFERENCE_README_EXAMPLE.replace("from nd_vq_vae import NDimVQVAE", "from ndvq import NDimVQVAE")
    assert code.count("\n") == REFERENCE_README_EXAMPLE.count("\n")
    # 3 frames cannot be halved, so time keeps its size; space shrinks 4x
    env = {"torch": torch, "args": types.SimpleNamespace(downsample=[1, 4, 4]), "batch_size": 1}
    exec(compile(code, "nd_vq_vae_readme", "exec"), env)
    recon_loss, x_recon, vq_output, x = env["recon_loss"], env["x_recon"], env["vq_output"], env["x"]
    assert isinstance(env["model"], ndvq.NDimVQVAE)
    assert x_recon.shape == x.shape == (1, 3, 3, 128, 256)
    assert recon_loss.ndim == 0 and torch.isfinite(recon_loss)
    assert {"embeddings", "encodings", "commitment_loss", "perplexity"} <= set(vq_output)
    assert vq_output["embeddings"].shape == (1, 64, 3, 32, 64)
    assert vq_output["encodings"].shape == (1, 3, 32, 64)
    assert env["model"].latent_shape == (3, 32, 64)


@pytest.mark.parametrize("n_dims,channels,ds,spatial", [(1, 1, [4], (32,)), (2, 5, ["2", "4"], (16, 16)),
                                                        (3, 3, [1, 2, 2], (2, 8, 8))])
def test_drop_in_api(n_dims, channels, ds, spatial):
    model = NDimVQVAE(embedding_dim=8, n_codes=16, n_dims=n_dims, downsample=ds, n_hiddens=16, n_res_layers=1,
                      codebook_beta=0.1, input_shape=(channels, *spatial))
    x = torch.randn(2, channels, *spatial)
    recon_loss, x_recon, vq = model(x)
    latent = tuple(s // int(f) for s, f in zip(spatial, ds))
    assert model.latent_shape == latent
    torch.testing.assert_close(recon_loss, torch.nn.functional.mse_loss(x_recon, x) / 0.06)
    assert vq["encodings"].shape == (2, *latent) and vq["embeddings"].shape == (2, 8, *latent)
    assert vq["commitment_loss"].ndim == 0 and vq["perplexity"].ndim == 0
    loss = model.training_step({"data": x}, 0)
    loss.backward()
    assert model.model.backbone.encoder.conv_last.conv.weight.grad.abs().sum() > 0
    model.eval()
    codes = model.encode(x)
    codes2, emb = model.encode(x, include_embeddings=True)
    assert torch.equal(codes, codes2) and emb.shape == (2, 8, *latent)
    torch.testing.assert_close(model.decode(codes), model(x)[1], atol=1e-5, rtol=1e-5)
    assert isinstance(model.configure_optimizers(), torch.optim.Adam)


def test_reference_defaults_and_overrides(tmp_path):
    model = NDimVQVAE(embedding_dim=8, n_codes=16, n_dims=2, downsample=[4, 4], n_hiddens=16, n_res_layers=1,
                      codebook_beta=0.1, input_shape=(32, 32))  # spatial only: 3 channels, as the reference
    assert model.model.in_channels == 3
    attn = model.model.backbone.encoder.res_stack[0].attn
    assert attn.n_head == 2 and attn.attn_dropout == 0.1
    off = NDimVQVAE(embedding_dim=8, n_codes=16, n_dims=2, downsample=[4, 4], n_hiddens=16, n_res_layers=1,
                    codebook_beta=0.1, input_shape=(1, 32, 32), n_head=0, norm="group", recon_loss_factor=1.0)
    assert off.model.backbone.encoder.res_stack[0].attn is None and off.model.recon_loss_factor == 1.0
    off.save_pretrained(tmp_path / "m")
    loaded = ndvq.load_pretrained(tmp_path / "m")
    assert type(loaded) is NDimVQVAE and loaded.config == off.config
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['n_heads'\\]"):
        NDimVQVAE(embedding_dim=8, n_codes=16, n_dims=2, downsample=[4, 4], n_hiddens=16, n_res_layers=1,
                  codebook_beta=0.1, input_shape=(1, 32, 32), n_heads=2)
    with pytest.raises(ValueError, match=r"input_shape must be \(C, \*S\) with 2 spatial sizes"):
        NDimVQVAE(embedding_dim=8, n_codes=16, n_dims=2, downsample=[4, 4], n_hiddens=16, n_res_layers=1,
                  codebook_beta=0.1, input_shape=(1, 1, 32, 32))
    with pytest.raises(ValueError, match="expected 1 channels"):
        off(torch.randn(1, 3, 32, 32))
