"""The medical vae_config.json: mapping onto Config and every validation error (named key, value, fix)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from ndvq.config import ConfigError, load_config
from ndvq.config.medical import MEDICAL_DEFAULTS, from_medical, is_medical_config, load_medical

EXAMPLE = Path(__file__).resolve().parents[1] / "configs" / "medical" / "vae_config.json"


def medical(**changes) -> dict:
    """A valid medical dict (documented defaults) with dotted-key changes, e.g. ``**{"autoencoder_def.channels": [8]}``."""
    d = copy.deepcopy(MEDICAL_DEFAULTS)
    d["data_base_dir"] = "/nonexistent/data"
    for key, value in changes.items():
        node = d
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        if value is _DELETE:
            del node[leaf]
        else:
            node[leaf] = value
    return d


_DELETE = object()


def convert(**changes):
    return from_medical(medical(**changes), check_paths=False)


def test_example_file_mirrors_documented_defaults():
    d = json.loads(EXAMPLE.read_text())
    assert is_medical_config(d)
    for key, value in MEDICAL_DEFAULTS.items():
        if key == "data_base_dir":
            continue
        assert d[key] == value, key
    cfg, extras = from_medical(d, check_paths=False)
    assert cfg.model.kind == "klvae" and cfg.model.ldm.channels == [64, 128, 256]
    assert (cfg.model.backbone, cfg.model.bottleneck, cfg.model.embedding_dim) == ("ldm", "gaussian", 4)
    assert cfg.loss.recon_loss == "l1"


def test_mapping():
    cfg, extras = convert(**{"autoencoder_train.recon_loss": "l2", "autoencoder_train.lr": 1e-4,
                             "data_source": "dente", "run_dir": "/tmp/out/myrun", "augment": True,
                             "autoencoder_train.val_interval": 3, "autoencoder_train.patch_size": [64, 32]})
    assert cfg.model.kind == "klvae" and cfg.model.n_dims == 2 and cfg.model.in_channels == 1
    assert cfg.loss.recon_loss == "mse"
    assert cfg.data.kind == "image" and cfg.data.subfolders == ["dente"] and cfg.data.channels == 1
    assert cfg.data.root == Path("/nonexistent/data") and cfg.data.train_split == 0.9 and cfg.data.augment
    assert cfg.data.patch_size == [64, 32]
    assert cfg.train.learning_rate == 1e-4 and cfg.train.scale_lr_by_world_size
    assert cfg.train.batch_size == 8 and cfg.train.num_epochs == 100 and cfg.train.max_steps is None
    assert cfg.train.val_every_epochs == 3 and extras.val_every_epochs == 3
    assert cfg.loss.perceptual_weight == 1.0 and cfg.loss.kl_weight == 1e-6
    assert cfg.run.root == Path("/tmp/out") and cfg.run.name == "myrun" and cfg.run.resume is None
    k = cfg.model.ldm
    assert (cfg.model.embedding_dim, k.num_res_blocks, k.norm_num_groups, k.norm_eps) == (4, 2, 32, 1e-6)
    assert k.attention_levels == [False, False, False] and k.with_encoder_nonlocal_attn

    cfg3, _ = convert(spatial_dims=3, **{"autoencoder_def.spatial_dims": 3,
                                         "autoencoder_train.patch_size": [32, 32, 32], "data_source": "both"})
    assert cfg3.data.kind == "volume" and cfg3.model.n_dims == 3 and cfg3.data.subfolders == ["edente", "dente"]
    cfg_e, _ = convert(data_source="edente")
    assert cfg_e.data.subfolders == ["edente"]


def test_grouped_sections_and_comments():
    d = medical()
    d["paths"] = {"run_dir": d.pop("run_dir"), "data_base_dir": d.pop("data_base_dir")}
    d["data"] = {"data_source": d.pop("data_source")}
    d["_comment"] = "ignored"
    cfg, _ = from_medical(d, check_paths=False)
    assert cfg.run.name == "vae"
    d["run_dir"] = "x"
    with pytest.raises(ConfigError, match="paths.run_dir is given twice"):
        from_medical(d, check_paths=False)


def test_resume_keys_map_to_run_resume(tmp_path):
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"")
    cfg, extras = convert(resume_ckpt=True, checkpoint_dir=str(ckpt))
    assert extras.resume == ckpt and cfg.run.resume == ckpt
    cfg, extras = convert(resume_ckpt=False, checkpoint_dir=str(ckpt))
    assert extras.resume is None and cfg.run.resume is None


@pytest.mark.parametrize("changes,message", [
    ({"autoencoder_def.norm_num_groups": 48},
     "norm_num_groups (48) must divide every entry of channels; 64 is not divisible by 48"),
    ({"data_source": "upper"}, "data_source must be one of 'edente', 'dente', 'both', got 'upper'"),
    ({"spatial_dims": 3}, "spatial_dims mismatch: spatial_dims=3 at the top level but autoencoder_def.spatial_dims=2"),
    ({"spatial_dims": 1, "autoencoder_def.spatial_dims": 1}, "spatial_dims must be 2 (images) or 3 (volumes), got 1"),
    ({"autoencoder_train.patch_size": [256, 256, 256]}, "patch_size needs 2 entries for spatial_dims=2, got 3"),
    ({"autoencoder_train.patch_size": [250, 256]}, "multiples of 2**(len(channels)-1) = 4"),
    ({"autoencoder_train.patch_size": "big"}, "patch_size must be a non-empty list of integers"),
    ({"autoencoder_def.attention_levels": [False, True]}, "attention_levels needs one entry per entry of channels (3"),
    ({"autoencoder_def.attention_levels": [0, 0, 0]}, "attention_levels must be a list of true/false"),
    ({"autoencoder_def.channels": []}, "channels must be a non-empty list of integers"),
    ({"autoencoder_def.channels": [64, "128"]}, "channels[1] must be an integer, got '128'"),
    ({"autoencoder_def.in_channels": 0}, "in_channels must be >= 1, got 0"),
    ({"autoencoder_def.out_channels": 3}, "out_channels (3) must equal in_channels (1)"),
    ({"autoencoder_def.latent_channels": 2.5}, "latent_channels must be an integer, got 2.5"),
    ({"autoencoder_def.num_res_blocks": -1}, "num_res_blocks must be >= 0, got -1"),
    ({"autoencoder_def.norm_eps": 0}, "norm_eps out of range (0.0 < value), got 0"),
    ({"autoencoder_def.with_encoder_nonlocal_attn": "yes"}, "with_encoder_nonlocal_attn must be true or false"),
    ({"autoencoder_def.with_decoder_nonlocal_attn": 1}, "with_decoder_nonlocal_attn must be true or false"),
    ({"autoencoder_train.batch_size": 0}, "batch_size must be >= 1, got 0"),
    ({"autoencoder_train.batch_size": True}, "batch_size must be an integer, got True"),
    ({"autoencoder_train.max_epochs": 0}, "max_epochs must be >= 1, got 0"),
    ({"autoencoder_train.val_interval": 0}, "val_interval must be >= 1, got 0"),
    ({"autoencoder_train.lr": 0}, "lr out of range (0.0 < value <= 1.0), got 0"),
    ({"autoencoder_train.lr": "fast"}, "lr must be a number, got 'fast'"),
    ({"autoencoder_train.perceptual_weight": -1}, "perceptual_weight out of range (0.0 <= value), got -1"),
    ({"autoencoder_train.kl_weight": -1e-6}, "kl_weight out of range"),
    ({"autoencoder_train.recon_loss": "l3"}, "recon_loss must be one of 'l1', 'l2', got 'l3'"),
    ({"train_split": 0}, "train_split out of range (0.0 < value <= 1.0), got 0"),
    ({"train_split": 1.0}, "train_split is 1.0 and val_dir is null"),
    ({"augment": "true"}, "augment must be true or false, got 'true'"),
    ({"data_base_dir": None}, "data_base_dir is required"),
    ({"data_base_dir": 5}, "data_base_dir must be a path string, got 5"),
    ({"run_dir": ""}, "run_dir is required"),
    ({"resume_ckpt": "no"}, "resume_ckpt must be true or false"),
    ({"resume_ckpt": True}, "checkpoint_dir must be set when resume_ckpt is true"),
    ({"autoencoder_def": [1]}, "autoencoder_def must be a mapping"),
])
def test_validation_errors(changes, message):
    with pytest.raises(ConfigError) as e:
        convert(**changes)
    assert message in str(e.value)
    assert str(e.value).startswith("medical config:")


@pytest.mark.parametrize("changes,message", [
    ({"autoencoder_def.num_res_block": 2}, "unknown key 'autoencoder_def.num_res_block'; did you mean 'autoencoder_def.num_res_blocks'?"),
    ({"autoencoder_train.learning_rate": 1e-4}, "unknown key 'autoencoder_train.learning_rate'; did you mean 'autoencoder_train.lr'?"),
    ({"data_sorce": "both"}, "unknown key 'data_sorce'; did you mean 'data_source'?"),
    ({"autoencoder_train.latent_channels": 4}, "unknown key 'autoencoder_train.latent_channels'; it belongs in autoencoder_def"),
    ({"autoencoder_def.zzz": 4}, "unknown key 'autoencoder_def.zzz'; valid keys here:"),
])
def test_unknown_keys(changes, message):
    with pytest.raises(ConfigError) as e:
        convert(**changes)
    assert message in str(e.value)


def test_defaults_fill_missing_keys():
    d = {"data_base_dir": "/x", "autoencoder_def": {"channels": [32, 64]},
         "autoencoder_train": {"patch_size": [64, 64]}}
    with pytest.raises(ConfigError, match="attention_levels needs one entry per entry of channels"):
        from_medical(d, check_paths=False)  # the default has 3 entries, channels 2
    d["autoencoder_def"]["attention_levels"] = [False, True]
    cfg, _ = from_medical(d, check_paths=False)
    assert cfg.model.ldm.channels == [32, 64] and cfg.train.batch_size == 8


def test_path_checks(tmp_path):
    (tmp_path / "edente").mkdir()
    ok = medical(data_base_dir=str(tmp_path), data_source="edente")
    from_medical(ok)
    with pytest.raises(ConfigError, match=r"data_source 'both' needs the subfolder\(s\) \['dente'\]"):
        from_medical(medical(data_base_dir=str(tmp_path), data_source="both"))
    with pytest.raises(ConfigError, match="data_base_dir .* is not an existing folder"):
        from_medical(medical(data_base_dir=str(tmp_path / "missing")))
    with pytest.raises(ConfigError, match="val_dir .* is not an existing folder"):
        from_medical(medical(data_base_dir=str(tmp_path), data_source="edente", val_dir=str(tmp_path / "v")))
    with pytest.raises(ConfigError, match="checkpoint_dir .* does not exist"):
        from_medical(medical(data_base_dir=str(tmp_path), data_source="edente", resume_ckpt=True,
                             checkpoint_dir=str(tmp_path / "none.ckpt")))


def test_load_config_detects_medical_file(tmp_path):
    (tmp_path / "data" / "edente").mkdir(parents=True)
    (tmp_path / "data" / "dente").mkdir()
    path = tmp_path / "vae_config.json"
    path.write_text(json.dumps(medical(data_base_dir=str(tmp_path / "data"))))
    cfg = load_config(path, ["train.batch_size=2"])
    assert cfg.model.kind == "klvae" and cfg.train.batch_size == 2
    cfg2, _ = load_medical(path)
    assert cfg2.model.ldm == cfg.model.ldm and cfg2.model.embedding_dim == cfg.model.embedding_dim
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        load_medical(path)


def test_config_format_flag(tmp_path, capsys):
    """`ndvq train --config-format medical|ndvq|auto`: forced reading, with clear errors when it does not fit."""
    from ndvq.cli import main

    (tmp_path / "data" / "edente").mkdir(parents=True)
    (tmp_path / "data" / "dente").mkdir()
    med = tmp_path / "vae_config.json"
    med.write_text(json.dumps(medical(data_base_dir=str(tmp_path / "data"))))
    assert load_config(med, config_format="medical").model.kind == "klvae"
    with pytest.raises(ConfigError, match="unknown config key"):  # read as ndvq's own schema: its sections are unknown
        load_config(med, config_format="ndvq")
    own = tmp_path / "own.json"
    own.write_text(json.dumps({"model": {"n_codes": 64}}))
    with pytest.raises(ConfigError, match="not a medical vae_config.json.*autoencoder_def"):
        load_config(own, config_format="medical")
    assert main(["train", "-c", str(med), "--config-format", "medical", "--print-config"]) == 0
    assert "kind: klvae" in capsys.readouterr().out
    assert main(["train", "-c", str(own), "--config-format", "medical", "--print-config"]) == 2
    assert "not a medical vae_config.json" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# End to end: `ndvq train -c vae_config.json` on generated float32 TIFF folders
# --------------------------------------------------------------------------------------------

def _tiny_weights(path: Path) -> Path:
    """A tiny randomly initialised VGG16-layout state dict (torchvision key names), never real weights."""
    import torch

    from ndvq.objectives.perceptual import LAYOUTS

    g = torch.Generator().manual_seed(0)
    sd, c_in = {}, 3
    for i, item in enumerate(LAYOUTS["vgg16"]["layers"]):
        if item[0] == "conv":
            sd[f"features.{i}.weight"] = torch.randn(4, c_in, 3, 3, generator=g) * 0.3
            sd[f"features.{i}.bias"] = torch.zeros(4)
            c_in = 4
    torch.save(sd, path)
    return path


@pytest.fixture
def dental(tmp_path, monkeypatch):
    """``data/edente`` (6) and ``data/dente`` (4) float32 TIFF crops of a real photo; tiny perceptual weights
    in $NDVQ_PERCEPTUAL_WEIGHTS; an empty torch hub cache."""
    import numpy as np
    import tifffile
    from skimage import data as skdata

    camera = skdata.camera().astype(np.float32) * 3.7 - 100.0  # float values outside [0, 255]
    root = tmp_path / "data"
    for sub, n in (("edente", 6), ("dente", 4)):
        (root / sub).mkdir(parents=True)
        for i in range(n):
            y, x = 40 * i + (sub == "dente") * 17, 30 * i
            tifffile.imwrite(root / sub / f"{sub}_{i}.tif", camera[y:y + 24, x:x + 24].copy())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("NDVQ_PERCEPTUAL_WEIGHTS", str(_tiny_weights(tmp_path / "tiny_vgg.pth")))
    return root


def tiny_vae_config(root: Path, run_dir: Path, **changes) -> dict:
    d = medical(**changes)
    d.update(data_base_dir=str(root), run_dir=str(run_dir), train_split=0.75)
    d["autoencoder_def"].update(channels=[8, 16], norm_num_groups=4, latent_channels=2, num_res_blocks=1,
                                attention_levels=[False, True])
    d["autoencoder_train"].update(batch_size=2, patch_size=[16, 16], max_epochs=2, lr=1e-3)
    for key, value in changes.items():  # dotted changes win over the tiny values
        node = d
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return d


def _write(d: dict, path: Path) -> Path:
    path.write_text(json.dumps(d, indent=2))
    return path


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("source,folders", [("edente", {"edente"}), ("dente", {"dente"}), ("both", {"edente", "dente"})])
def test_train_from_vae_config(dental, tmp_path, source, folders):
    from ndvq import build
    from ndvq.cli import main

    run_dir = tmp_path / "runs" / f"vae-{source}"
    path = _write(tiny_vae_config(dental, run_dir, data_source=source), tmp_path / "vae_config.json")
    assert main(["train", "-c", str(path)]) == 0
    cfg = load_config(path)
    ds = build.build_dataset(cfg, "all")
    assert {Path(ds.item_info(i)["path"]).parent.name for i in range(len(ds))} == folders
    n_files = sum(len(list((dental / f).glob("*.tif"))) for f in folders)
    assert len(ds) == n_files
    recs = _records(run_dir)
    train, val = [r for r in recs if r["split"] == "train"], [r for r in recs if r["split"] == "val"]
    assert {"kl_loss", "perceptual_loss", "recon_loss"} <= set(train[-1]) and train[-1]["perceptual_loss"] > 0
    assert [r["epoch"] for r in val] == [0, 1]  # val_interval=1 epoch, max_epochs=2
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "config.yaml").is_file()
    assert list((run_dir / "samples").rglob("*.png"))


@pytest.mark.slow
def test_train_resumes_from_checkpoint_dir(dental, tmp_path):
    import torch

    from ndvq.cli import main

    run_dir = tmp_path / "runs" / "vae"
    first = _write(tiny_vae_config(dental, run_dir, **{"autoencoder_train.max_epochs": 1}), tmp_path / "a.json")
    assert main(["train", "-c", str(first)]) == 0
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    step1 = torch.load(ckpt, weights_only=True)["state"]["step"]  # TrainState.to_dict()
    second = tiny_vae_config(dental, run_dir, resume_ckpt=True, checkpoint_dir=str(ckpt))
    assert main(["train", "-c", str(_write(second, tmp_path / "b.json"))]) == 0
    state = torch.load(ckpt, weights_only=True)["state"]
    assert state["step"] == 2 * step1 and state["epoch"] >= 1
    steps = [r["step"] for r in _records(run_dir) if r["split"] == "train"]
    assert steps == sorted(steps) and steps[-1] == 2 * step1  # continued, not restarted

    # latents for a diffusion model: posterior means + the suggested scale factor 1 / std
    import numpy as np

    assert main(["encode", str(run_dir), "--out", str(tmp_path / "latents.npz")]) == 0
    z = np.load(tmp_path / "latents.npz")
    assert z["latents"].shape == (10, 2, 12, 12)  # 10 images of 24x24, /2 (two levels); latent_channels=2
    assert float(z["scale_factor"]) == pytest.approx(1 / z["latents"].std(ddof=1), rel=1e-4)


def test_missing_perceptual_weights_stops_before_training(dental, tmp_path, monkeypatch, capsys):
    from ndvq.cli import main

    monkeypatch.delenv("NDVQ_PERCEPTUAL_WEIGHTS")
    run_dir = tmp_path / "runs" / "noweights"
    path = _write(tiny_vae_config(dental, run_dir), tmp_path / "vae_config.json")
    assert main(["train", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "vgg16-397923af.pth" in err and "perceptual_weight=0" in err and "NDVQ_PERCEPTUAL_WEIGHTS" in err
    assert not (run_dir / "metrics.jsonl").exists() or not _records(run_dir)


@pytest.mark.slow
def test_ddp_two_processes(dental, tmp_path):
    import torch

    from ndvq.cli import main

    run_dir = tmp_path / "runs" / "ddp"
    d = tiny_vae_config(dental, run_dir, data_source="both", **{"autoencoder_train.max_epochs": 1})
    path = _write(d, tmp_path / "vae_config.json")
    assert main(["train", "-c", str(path), "train.devices=2", "train.accelerator=cpu",
                 "loss.adversarial_weight=0.1", "loss.disc_layers=1", "loss.disc_channels=4"]) == 0
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["state"]["step"] >= 1 and "discriminator" in ckpt
    train = [r for r in _records(run_dir) if r["split"] == "train"]
    assert train[-1]["lr"] == pytest.approx(2e-3)  # lr x world size
    assert "disc_loss" in train[-1]


@pytest.mark.slow
def test_train_3d_volumes(tmp_path, monkeypatch):
    """spatial_dims=3: NIfTI volumes in edente/ and dente/, perceptual loss on slices along each axis."""
    import nibabel as nib
    import numpy as np

    from ndvq.cli import main

    rng = np.random.default_rng(0)
    root = tmp_path / "vol"
    for sub in ("edente", "dente"):
        (root / sub).mkdir(parents=True)
        for i in range(2):
            v = rng.normal(size=(16, 16, 16)).cumsum(0).astype(np.float32)
            nib.save(nib.Nifti1Image(v, np.eye(4)), str(root / sub / f"{sub}_{i}.nii.gz"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("NDVQ_PERCEPTUAL_WEIGHTS", str(_tiny_weights(tmp_path / "tiny_vgg.pth")))
    run_dir = tmp_path / "runs" / "vae3d"
    d = tiny_vae_config(root, run_dir, spatial_dims=3, **{
        "autoencoder_def.spatial_dims": 3, "autoencoder_train.patch_size": [16, 16, 16],
        "autoencoder_train.max_epochs": 1, "autoencoder_train.batch_size": 1})
    d["train_split"] = 0.5
    assert main(["train", "-c", str(_write(d, tmp_path / "vae3d.json")), "loss.perceptual_slices=3"]) == 0
    assert load_config(run_dir / "config.yaml").loss.perceptual_slices == 3
    train = [r for r in _records(run_dir) if r["split"] == "train"]
    assert train[-1]["perceptual_loss"] > 0 and "kl_loss" in train[-1]
    assert list((run_dir / "samples").rglob("*.nii.gz")) or list((run_dir / "samples").rglob("*.nii"))


def test_misspelt_section_gets_a_hint(tmp_path):
    (tmp_path / "edente").mkdir()
    (tmp_path / "dente").mkdir()
    d = medical(data_base_dir=str(tmp_path))
    d["autoencoder_trian"] = d.pop("autoencoder_train")
    path = _write(d, tmp_path / "vae_config.json")
    with pytest.raises(ConfigError, match="unknown key 'autoencoder_trian'; did you mean 'autoencoder_train'"):
        load_config(path)


def test_monai_options_per_level_blocks_and_checkpointing():
    d = copy.deepcopy(MEDICAL_DEFAULTS)
    d["data_base_dir"] = "/data"
    d["autoencoder_def"].update(num_res_blocks=[1, 2, 2], use_convtranspose=True, include_fc=False,
                                use_checkpoint=True)
    cfg, _ = from_medical(d, check_paths=False)
    k = cfg.model.ldm
    assert k.num_res_blocks == [1, 2, 2] and k.use_convtranspose is True and k.include_fc is False
    assert k.use_combined_linear is None and cfg.train.activation_checkpointing is True
    assert cfg.loss.perceptual_fake_3d_ratio is None and cfg.loss.perceptual_network == "auto"
    d["autoencoder_def"]["num_res_blocks"] = [1, 2]
    with pytest.raises(ConfigError, match="num_res_blocks needs one entry per entry of channels"):
        from_medical(d, check_paths=False)


def test_3d_uses_monais_fake_3d_ratio():
    d = copy.deepcopy(MEDICAL_DEFAULTS)
    d.update(data_base_dir="/data", spatial_dims=3)
    d["autoencoder_def"]["spatial_dims"] = 3
    d["autoencoder_train"]["patch_size"] = [64, 64, 64]
    assert from_medical(d, check_paths=False)[0].loss.perceptual_fake_3d_ratio == 0.5
    d["autoencoder_train"]["fake_3d_ratio"] = 0.25
    assert from_medical(d, check_paths=False)[0].loss.perceptual_fake_3d_ratio == 0.25


def test_resume_from_a_monai_checkpoint_is_init_from(tmp_path):
    ckpt = tmp_path / "autoencoder.pt"
    ckpt.write_bytes(b"")
    cfg, extras = convert(resume_ckpt=True, checkpoint_dir=str(ckpt))
    assert cfg.run.init_from == ckpt and cfg.run.resume is None and extras.resume is None
