"""save_pretrained / from_pretrained / load_pretrained: round trips, dispatch, clear errors, no pickle."""

from __future__ import annotations

import json

import pytest
import torch

import ndvq
from ndvq import VQVAE, load_pretrained
from ndvq.networks.pretrained import registered_classes

SMALL = dict(n_hiddens=16, n_res_layers=1, embedding_dim=8, n_codes=16)


@pytest.mark.parametrize("n_dims,spatial", [(1, (32,)), (2, (16, 16)), (3, (4, 8, 8))])
def test_round_trip(tmp_path, n_dims, spatial):
    model = VQVAE(n_dims=n_dims, in_channels=2, downsample=[1, 4, 4][-n_dims:] if n_dims == 3 else 4,
                  quantizer={"kind": "vq", "restart": "replay", "replay_size": 64}, **SMALL)
    x = torch.randn(2, 2, *spatial)
    for _ in range(2):
        model(x)  # k-means init, EMA statistics, BatchNorm running stats, replay buffer
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
    assert "encoder.conv_last.conv.weight" in header
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
    names = registered_classes()
    assert {"VQVAE", "HierarchicalVQVAE", "NDimVQVAE"} <= set(names)
    for name in ("VQVAE", "HierarchicalVQVAE", "NDimVQVAE", "load_pretrained", "KLVAE"):
        assert getattr(ndvq, name) is not None
    assert set(ndvq.__all__) == {"VQVAE", "HierarchicalVQVAE", "KLVAE", "NDimVQVAE", "load_pretrained"}
    with pytest.raises(AttributeError):
        ndvq.NotAThing  # noqa: B018


def test_builders_config_builds_the_models():
    from ndvq.builders import model_args, model_from_args
    from ndvq.config import load_config

    for kind in ("vqvae", "hierarchical"):
        cfg = load_config(None, [f"model.kind={kind}", "model.n_hiddens=16", "model.n_res_layers=1",
                                 "model.embedding_dim=8", "model.n_codes=16", "model.downsample=[2,2]"])
        name, kwargs = model_args(cfg)
        model = model_from_args(name, kwargs)
        assert type(model).__name__ == name and model.config["n_hiddens"] == 16
        assert model(torch.randn(2, 3, 16, 16)).reconstruction.shape == (2, 3, 16, 16)
