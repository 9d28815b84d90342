"""The medical round trip: a MONAI AutoencoderKL checkpoint -> `ndvq convert monai` -> the seed-style
vae_config.json's model initialised from it (`--init-from`) -> 2 training steps -> exported back -> MONAI loads
it (strict) and computes what ndvq computes."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from ndvq.build import build_model, build_objective
from ndvq.config.medical import MEDICAL_DEFAULTS, from_medical
from ndvq.convert import convert_monai, export_monai
from ndvq.errors import ConfigError
from ndvq.models.monai import init_from, to_monai_state_dict

nets = pytest.importorskip("monai.networks.nets", reason="MONAI is in the test extra (pip install 'ndvq[test]')")


def _seed_config(tmp_path, **autoencoder_def) -> dict:
    d = copy.deepcopy(MEDICAL_DEFAULTS)
    d["data_base_dir"] = str(tmp_path)
    d["autoencoder_def"].update(channels=[8, 16], norm_num_groups=4, latent_channels=3,
                                attention_levels=[False, True], **autoencoder_def)
    d["autoencoder_train"].update(patch_size=[32, 32], batch_size=2, perceptual_weight=0.0)
    return d


def test_convert_train_export_load_in_monai(tmp_path):
    d = _seed_config(tmp_path, num_res_blocks=[1, 2])
    (tmp_path / "vae_config.json").write_text(json.dumps(d))
    monai_args = {k: v for k, v in d["autoencoder_def"].items()}
    torch.manual_seed(0)
    theirs = nets.AutoencoderKL(**monai_args)
    torch.save({"state_dict": theirs.state_dict()}, tmp_path / "autoencoder.pt")

    folder = convert_monai(tmp_path / "autoencoder.pt", tmp_path / "vae_config.json", tmp_path / "converted")
    d.update(resume_ckpt=True, checkpoint_dir=str(folder))
    cfg, _ = from_medical(d, check_paths=False)
    assert cfg.run.init_from == folder and cfg.run.resume is None
    net = init_from(build_model(cfg), cfg.run.init_from)  # what `ndvq train --init-from` does
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x).reconstruction, theirs.eval().reconstruct(x), rtol=0, atol=5e-5)

    objective, opt = build_objective(cfg), torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for _ in range(2):
        opt.zero_grad()
        objective(x, net(x), 0).loss.backward()
        opt.step()
    net.eval()
    net.save_pretrained(tmp_path / "trained")
    out, args = export_monai(tmp_path / "trained", tmp_path / "back.pt")
    again = nets.AutoencoderKL(**args).eval()
    again.load_state_dict(torch.load(out, weights_only=True), strict=True)
    assert not torch.equal(again.state_dict()["post_quant_conv.conv.weight"], theirs.state_dict()["post_quant_conv.conv.weight"])
    with torch.no_grad():
        mu, sigma = again.encode(x)
        torch.testing.assert_close(net.encode(x).mean, mu, rtol=0, atol=1e-5)
        torch.testing.assert_close(net.encode(x).std, sigma, rtol=0, atol=1e-5)
        torch.testing.assert_close(net.decode(mu), again.decode(mu), rtol=0, atol=1e-5)
    assert set(to_monai_state_dict(net)) == set(again.state_dict())


def test_cli_convert_and_bad_config(tmp_path):
    import argparse

    from ndvq.convert import register

    d = _seed_config(tmp_path)
    (tmp_path / "vae_config.json").write_text(json.dumps(d))
    theirs = nets.AutoencoderKL(**d["autoencoder_def"])
    torch.save(theirs.state_dict(), tmp_path / "a.pth")
    parser = argparse.ArgumentParser()  # cli.py adds the same subcommand with register(sub)
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["convert", "monai", str(tmp_path / "a.pth"), "--config", str(tmp_path / "vae_config.json"),
                              "--out", str(tmp_path / "out")])
    assert args.func(args) == 0 and (tmp_path / "out" / "model.safetensors").is_file()
    (tmp_path / "bad.json").write_text(json.dumps({"spatial_dims": 2, "chanels": [8, 16]}))
    with pytest.raises(ConfigError, match="unknown AutoencoderKL arguments"):
        convert_monai(tmp_path / "a.pth", tmp_path / "bad.json", tmp_path / "out2")
