"""save_pretrained / from_pretrained / load_pretrained: round trips, dispatch, clear errors, no pickle."""

from __future__ import annotations

import json

import pytest
import torch

import ndvq
from ndvq import VQVAE, load_pretrained
from ndvq.models import MODEL_REGISTRY, model_class

SMALL = dict(n_hiddens=16, n_res_layers=1, embedding_dim=8, n_codes=16)


@pytest.mark.parametrize("n_dims,spatial", [(1, (32,)), (2, (16, 16)), (3, (4, 8, 8))])
def test_round_trip(tmp_path, n_dims, spatial):
    model = VQVAE(n_dims=n_dims, in_channels=2, downsample=[1, 4, 4][-n_dims:] if n_dims == 3 else 4,
                  quantizer={"kind": "vq", "restart": "replay", "replay_size": 64}, **SMALL)
    x = torch.randn(2, 2, *spatial)
    for _ in range(2):
        model(x)  # k-means init, EMA statistics, replay buffer
    model.eval()
    d = model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors"]
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["_class_name"] == "VQVAE" and cfg["n_dims"] == n_dims and cfg["quantizer"]["restart"] == "replay"
    loaded = VQVAE.from_pretrained(d)
    assert not loaded.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    assert bool(loaded.quantizer.initialised)
    torch.testing.assert_close(loaded(x).reconstruction, model(x).reconstruction)
    assert torch.equal(loaded.encode(x), model.encode(x))
    via_dispatch = ndvq.load_pretrained(d)
    assert type(via_dispatch) is VQVAE


def test_the_weights_file_is_safetensors_not_pickle(tmp_path):
    VQVAE(n_dims=1, in_channels=1, downsample=2, **SMALL).save_pretrained(tmp_path)
    raw = (tmp_path / "model.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + header_len])
    assert "backbone.encoder.conv_last.conv.weight" in header
    assert not raw.startswith(b"PK") and not raw.startswith(b"\x80")  # not a zip/pickle


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="lacks config.json, model.safetensors"):
        VQVAE.from_pretrained(tmp_path / "empty")
    VQVAE(n_dims=1, in_channels=1, downsample=2, **SMALL).save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="lacks model.safetensors"):
        load_pretrained(tmp_path / "m")


def test_wrong_class_and_bad_config(tmp_path):
    VQVAE(n_dims=1, in_channels=1, downsample=2, **SMALL).save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="holds a VQVAE, not a HierarchicalVQVAE"):
        ndvq.HierarchicalVQVAE.from_pretrained(tmp_path / "m")
    cfg = tmp_path / "m" / "config.json"
    cfg.write_text(json.dumps({"_class_name": "Mystery"}))
    with pytest.raises(ValueError, match="model class 'Mystery'"):
        load_pretrained(tmp_path / "m")
    cfg.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_pretrained(tmp_path / "m")


def test_mismatched_weights_are_an_error(tmp_path):
    VQVAE(n_dims=1, in_channels=1, downsample=2, **SMALL).save_pretrained(tmp_path / "m")
    cfg = tmp_path / "m" / "config.json"
    data = json.loads(cfg.read_text())
    data["n_hiddens"] = 32
    cfg.write_text(json.dumps(data))
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_pretrained(tmp_path / "m")


def test_registry_and_public_names():
    names = set(MODEL_REGISTRY)
    assert names == {"Autoencoder", "HierarchicalAutoencoder", "VQVAE", "HierarchicalVQVAE", "KLVAE", "NDimVQVAE"}
    assert all(model_class(name).__name__ == name for name in names)
    for name in ("VQVAE", "HierarchicalVQVAE", "NDimVQVAE", "load_pretrained", "KLVAE"):
        assert getattr(ndvq, name) is not None
    assert set(ndvq.__all__) == {"Autoencoder", "VQVAE", "HierarchicalVQVAE", "KLVAE", "NDimVQVAE", "load_pretrained"}
    with pytest.raises(AttributeError):
        ndvq.NotAThing  # noqa: B018



# state-dict prefixes written by ndvq before the backbone x bottleneck layout (ndvq.networks)
OLD_PREFIXES = {
    "VQVAE": {"backbone.encoder.": "encoder.", "backbone.pre_conv.": "pre_vq_conv.",
              "bottleneck.quantizer.": "quantizer.", "backbone.post_conv.": "post_vq_conv.",
              "backbone.decoder.": "decoder."},
    "KLVAE": {"backbone.encoder.": "encoder.", "bottleneck.to_mean.": "to_mean.", "bottleneck.to_logvar.": "to_logvar.",
              "backbone.post_conv.": "post_latent.", "backbone.decoder.": "decoder."},
    "HierarchicalVQVAE": {"backbone.encoder.": "encoder_bottom.", "top_backbone.encoder.": "encoder_top.",
                          "top_backbone.pre_conv.": "pre_vq_top.", "top_bottleneck.quantizer.": "quantizer_top.",
                          "top_backbone.post_conv.": "decoder_top.0.", "top_backbone.decoder.": "decoder_top.1.",
                          "backbone.pre_conv.": "pre_vq_bottom.", "bottleneck.quantizer.": "quantizer_bottom.",
                          "backbone.post_conv.": "post_vq_conv.", "backbone.decoder.": "decoder.",
                          "upsample_top.": "upsample_top."},
}


def _old_name(key: str, prefixes: dict[str, str], outer: str = "") -> str:
    rest = key[len(outer):]
    new = next(n for n in prefixes if rest.startswith(n))
    return outer + prefixes[new] + rest[len(new):]


@pytest.mark.parametrize("name", ["VQVAE", "KLVAE", "HierarchicalVQVAE", "NDimVQVAE"])
def test_folders_saved_with_the_old_weight_names_load(tmp_path, name):
    from safetensors.torch import load_file, save_file

    small = dict(n_dims=2, in_channels=1, downsample=2, **SMALL)
    model = {"VQVAE": lambda: ndvq.VQVAE(**small),
             "KLVAE": lambda: ndvq.KLVAE(n_dims=2, in_channels=1, channels=(8, 16), norm_num_groups=4),
             "HierarchicalVQVAE": lambda: ndvq.HierarchicalVQVAE(**small),
             "NDimVQVAE": lambda: ndvq.NDimVQVAE(embedding_dim=8, n_codes=16, n_dims=2, downsample=[2, 2],
                                                 n_hiddens=16, n_res_layers=1, codebook_beta=0.1,
                                                 input_shape=(1, 16, 16))}[name]()
    x = torch.randn(2, 1, 16, 16)
    model(x)
    model.eval()
    d = model.save_pretrained(tmp_path / "m")
    prefixes, outer = (OLD_PREFIXES["VQVAE"], "model.") if name == "NDimVQVAE" else (OLD_PREFIXES[name], "")
    old = {_old_name(k, prefixes, outer): v for k, v in load_file(d / "model.safetensors").items()}
    assert not any(k[len(outer):].startswith(("backbone.", "bottleneck.", "top_")) for k in old)  # old names only
    save_file(old, str(d / "model.safetensors"))
    loaded = load_pretrained(d)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    result = loaded(x)
    ref = model(x)
    got, want = (result[1], ref[1]) if name == "NDimVQVAE" else (result.reconstruction, ref.reconstruction)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("change, message", [
    ({"n_codes": 10**11}, "GB of memory is available"),                       # refused before any allocation
    ({"quantizer": {"kind": "residual", "num_quantizers": 10**6}}, r"num_quantizers must be in \[1, 64\]"),
])
def test_hostile_config_json_is_refused_before_allocating(tmp_path, change, message):
    import json

    from ndvq import VQVAE, load_pretrained
    from ndvq.errors import CheckpointError

    VQVAE(n_dims=1, in_channels=1, n_hiddens=8, n_res_layers=1, downsample=[4], embedding_dim=4,
          n_codes=16).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(change)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        load_pretrained(tmp_path)


def test_a_videogpt_autoencoder_saved_before_channel_norm_became_the_default_loads_as_batch_norm(tmp_path):
    """A generic ``Autoencoder`` folder whose ``videogpt`` options name no norm was saved when batch norm
    was the default: its weights (with running statistics) load into a batch-norm model, also for
    ``--init-from`` (``ndvq.run.checkpoint.load_model``), and give the saved model's reconstruction."""
    from ndvq.models import Autoencoder
    from ndvq.run.checkpoint import load_model

    options = dict(n_hiddens=16, num_res_blocks=1, downsample=[4, 4], n_head=0)
    old = Autoencoder(embedding_dim=8, n_codes=16, videogpt={**options, "norm": "batch"})
    x = torch.randn(4, 3, 16, 16)
    old(x)  # running statistics move away from their initial values
    old.eval()
    d = old.save_pretrained(tmp_path / "old")
    cfg = json.loads((d / "config.json").read_text())
    del cfg["videogpt"]["norm"]  # what such a folder holds
    (d / "config.json").write_text(json.dumps(cfg))
    for loaded in (Autoencoder.from_pretrained(d), load_pretrained(d), load_model(d).model):
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.modules())
        torch.testing.assert_close(loaded(x).reconstruction, old(x).reconstruction)
    new = Autoencoder(embedding_dim=8, n_codes=16, videogpt=options)  # without running statistics: the new default
    new.save_pretrained(tmp_path / "new")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in load_pretrained(tmp_path / "new").modules())
