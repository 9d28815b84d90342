"""KLVAE == MONAI AutoencoderKL: random MONAI weights converted to ndvq give the same encode/decode, and
``to_monai_state_dict`` loads back into MONAI (strict) with the same outputs; old and Generative names."""

from __future__ import annotations

import pytest
import torch

from ndvq.errors import CheckpointError
from ndvq.models import KLVAE
from ndvq.models.monai import init_from, monai_key_map, unwrap_state_dict

nets = pytest.importorskip("monai.networks.nets", reason="MONAI is in the test extra (pip install 'ndvq[test]')")

CONFIGS = {
    "attn-last-level": dict(channels=(8, 16, 16), num_res_blocks=1, attention_levels=(False, False, True)),
    "per-level-blocks": dict(channels=(8, 16), num_res_blocks=(1, 2), attention_levels=(True, False)),
    "no-nonlocal": dict(channels=(8, 16), num_res_blocks=2, attention_levels=(False, False),
                        with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False),
    "convtranspose-combined-nofc": dict(channels=(8, 16), num_res_blocks=1, attention_levels=(False, True),
                                        use_convtranspose=True, use_combined_linear=True, include_fc=False),
    "flash": dict(channels=(8, 8), num_res_blocks=(2, 1), attention_levels=(True, True), use_flash_attention=True,
                  with_encoder_nonlocal_attn=False),
}
SIZES = {2: (16, 24), 3: (8, 8, 12)}


def _pair(n_dims: int, cfg: dict, seed: int = 0):
    torch.manual_seed(seed)
    theirs = nets.AutoencoderKL(spatial_dims=n_dims, in_channels=2, out_channels=2, latent_channels=3,
                                norm_num_groups=4, **cfg).eval()
    with torch.no_grad():  # non-trivial norms and biases
        for p in theirs.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ours = KLVAE.from_monai_state_dict(theirs.state_dict(), spatial_dims=n_dims, in_channels=2, out_channels=2,
                                       latent_channels=3, norm_num_groups=4, **cfg).eval()
    return theirs, ours


def _same(theirs, ours, x) -> None:
    with torch.no_grad():
        mu, sigma = theirs.encode(x)
        latent = ours.encode(x)
        assert (latent.mean - mu).abs().max() <= 1e-5
        assert (latent.std - sigma).abs().max() <= 1e-5
        assert (ours.decode(mu) - theirs.decode(mu)).abs().max() <= 1e-5
        # end to end (encoder and decoder roundoff compounded)
        assert (ours(x).reconstruction - theirs.reconstruct(x)).abs().max() <= 5e-5


@pytest.mark.parametrize("n_dims", [2, 3])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_monai_weights_give_the_same_network(n_dims, name):
    theirs, ours = _pair(n_dims, CONFIGS[name])
    _same(theirs, ours, torch.randn(2, 2, *SIZES[n_dims]))


@pytest.mark.parametrize("n_dims", [2, 3])
def test_export_loads_back_into_monai_strict(n_dims):
    cfg = CONFIGS["attn-last-level"]
    _, ours = _pair(n_dims, cfg, seed=1)
    again = nets.AutoencoderKL(**ours.monai_args()).eval()
    again.load_state_dict(ours.to_monai_state_dict(), strict=True)
    _same(again, ours, torch.randn(1, 2, *SIZES[n_dims]))


def test_wrappers_and_generative_names():
    theirs, ours = _pair(2, CONFIGS["per-level-blocks"])
    sd = theirs.state_dict()
    gen = {}
    for k, v in sd.items():  # MONAI Generative layout: attention projections on the block, upsampling "conv"
        k = k.replace(".attn.to_", ".to_").replace(".attn.out_proj.", ".proj_attn.").replace(".postconv.", ".conv.")
        gen[k] = v
    arch = dict(spatial_dims=2, in_channels=2, out_channels=2, latent_channels=3, norm_num_groups=4,
                **CONFIGS["per-level-blocks"])
    for wrapped in ({"state_dict": gen}, {"model": sd}, {"autoencoder": {k: v for k, v in sd.items()}}):
        other = KLVAE.from_monai_state_dict(wrapped, **arch).eval()
        x = torch.randn(1, 2, 16, 16)
        torch.testing.assert_close(other(x).reconstruction, ours(x).reconstruction, rtol=0, atol=0)
    assert set(unwrap_state_dict({"state_dict": {f"module.{k}": v for k, v in sd.items()}})) == set(sd)


def test_mismatch_is_one_line_naming_the_key():
    theirs, _ = _pair(2, CONFIGS["per-level-blocks"])
    arch = dict(spatial_dims=2, in_channels=2, out_channels=2, latent_channels=3, norm_num_groups=4,
                channels=(8, 16), num_res_blocks=1, attention_levels=(True, False))
    with pytest.raises(CheckpointError, match=r"has 'encoder\.blocks\.\d+\..*' that the config does not build|lacks"):
        KLVAE.from_monai_state_dict(theirs.state_dict(), **arch)
    arch.update(num_res_blocks=(1, 2), latent_channels=4)
    with pytest.raises(CheckpointError, match=r"has shape \[3, .*expects \[4,") as e:
        KLVAE.from_monai_state_dict(theirs.state_dict(), **arch)
    assert "\n" not in str(e.value)


def test_init_from_checkpoint_file_and_folder(tmp_path):
    theirs, ours = _pair(2, CONFIGS["attn-last-level"])
    torch.save({"state_dict": theirs.state_dict()}, tmp_path / "monai.pt")
    fresh = KLVAE(n_dims=2, in_channels=2, latent_channels=3, norm_num_groups=4, **CONFIGS["attn-last-level"])
    init_from(fresh, tmp_path / "monai.pt")
    for k, v in ours.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    ours.save_pretrained(tmp_path / "folder")
    other = KLVAE(n_dims=2, in_channels=2, latent_channels=3, norm_num_groups=4, **CONFIGS["attn-last-level"])
    init_from(other, tmp_path / "folder")
    assert torch.equal(other.backbone.post_conv.weight, ours.backbone.post_conv.weight)
    wrong = KLVAE(n_dims=2, in_channels=2, latent_channels=4, norm_num_groups=4, **CONFIGS["attn-last-level"])
    with pytest.raises(CheckpointError, match="expects"):
        init_from(wrong, tmp_path / "folder")


def test_layers_monai_lacks_are_refused():
    with pytest.raises(CheckpointError, match="final_activation"):
        monai_key_map(KLVAE(channels=(8, 16), norm_num_groups=4, final_activation=True))


def _old_ndvq_layout(sd: dict) -> dict:
    """Today's names -> ndvq's names before it matched MONAI (``skip``, fused ``qkv`` + ``proj``)."""
    old = {}
    for k, v in sd.items():
        if ".to_k." in k or ".to_v." in k:
            continue
        if ".to_q." in k:
            p, kind = k.split(".to_q.")
            v = torch.cat([sd[f"{p}.to_q.{kind}"], sd[f"{p}.to_k.{kind}"], sd[f"{p}.to_v.{kind}"]])
            k = f"{p}.qkv.{kind}"
        old[k.replace(".nin_shortcut.", ".skip.").replace(".out_proj.", ".proj.")] = v
    return old


def test_weights_of_the_earlier_ndvq_layout_load_with_their_final_silu(tmp_path):
    from safetensors.torch import load_file, save_file

    from ndvq.models import load_pretrained

    args = dict(n_dims=2, in_channels=1, channels=(8, 16), norm_num_groups=4, attention_levels=(False, True))
    old_net = KLVAE(**args, final_activation=True).eval()  # the earlier computation
    d = old_net.save_pretrained(tmp_path / "old")
    save_file(_old_ndvq_layout(load_file(d / "model.safetensors")), str(d / "model.safetensors"))
    cfg = (d / "config.json").read_text().replace('"final_activation": true,', "")  # an old config.json
    (d / "config.json").write_text(cfg)
    loaded = load_pretrained(d)
    assert loaded.backbone.final_activation and loaded.config["final_activation"] is True
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(loaded(x).reconstruction, old_net(x).reconstruction)
