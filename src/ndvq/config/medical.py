"""The medical-imaging ``vae_config.json`` -> an ndvq :class:`~ndvq.config.Config` (``model.kind=klvae``).

The file is accepted exactly as users have it (see ``configs/medical/vae_config.json`` and
``docs/medical.md``)::

    {
      "data_base_dir": "/data/dental", "run_dir": "runs/vae", "resume_ckpt": false,
      "checkpoint_dir": null, "data_source": "both", "train_split": 0.9, "val_dir": null,
      "augment": true, "spatial_dims": 2,
      "autoencoder_def": {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "latent_channels": 4,
                          "channels": [64, 128, 256], "num_res_blocks": 2, "norm_num_groups": 32,
                          "norm_eps": 1e-6, "attention_levels": [false, false, false],
                          "with_encoder_nonlocal_attn": true, "with_decoder_nonlocal_attn": true},
      "autoencoder_train": {"batch_size": 8, "patch_size": [256, 256], "max_epochs": 100,
                            "val_interval": 1, "lr": 2.5e-5, "perceptual_weight": 1.0,
                            "kl_weight": 1e-6, "recon_loss": "l1"}
    }

The path and data keys may also be grouped in ``"paths": {...}`` and ``"data": {...}`` sections.
Keys starting with ``_`` (e.g. ``"_comment"``) are ignored. Every other key is validated up front;
an unknown key is an error naming the closest valid key.

Mapping (medical key -> ndvq key):

============================================  ===============================================
``data_base_dir``                             ``data.root``
``data_source`` edente / dente / both         ``data.subfolders`` [edente] / [dente] / [edente, dente]
``train_split``, ``val_dir``, ``augment``     ``data.train_split``, ``data.val_dir``, ``data.augment``
``spatial_dims`` 2 / 3                        ``model.n_dims``; ``data.kind`` image / volume
``run_dir``                                   ``run.root`` (its parent) + ``run.name`` (its name)
``resume_ckpt`` + ``checkpoint_dir``          ``run.resume`` (``train()`` continues from it); a MONAI
                                              checkpoint (``.pt``/``.pth``/``.safetensors``) or a
                                              ``save_pretrained`` folder: ``run.init_from`` (weights only)
``autoencoder_def.latent_channels``           ``model.embedding_dim``
``autoencoder_def.*`` (other keys)            ``model.in_channels``, ``model.out_channels``, ``model.ldm.*``
``autoencoder_def.use_checkpoint`` (optional)  ``train.activation_checkpointing``
``autoencoder_def.use_convtranspose``,         ``model.ldm.*`` (MONAI AutoencoderKL options; optional)
``include_fc``, ``use_combined_linear``,
``use_flash_attention``
``autoencoder_train.batch_size``              ``train.batch_size`` (per device)
``autoencoder_train.patch_size``              ``data.patch_size`` (random crops for training)
``autoencoder_train.max_epochs``              ``train.num_epochs`` (``train.max_steps`` = None)
``autoencoder_train.val_interval`` (epochs)   ``train.val_every_epochs`` (validation, checkpoint, samples)
``autoencoder_train.lr``                      ``train.learning_rate`` (x world size: ``train.scale_lr_by_world_size``),
                                              held constant (``train.lr_schedule`` constant: the recipe names
                                              no schedule; set ``train.lr_schedule=cosine`` to decay), no
                                              weight average (``train.weight_ema`` null: the recipe keeps
                                              none, and a copy of a large model's weights costs memory)
``autoencoder_train.perceptual_weight``       ``loss.perceptual_weight``
``autoencoder_train.kl_weight``               ``loss.kl_weight``
``autoencoder_train.recon_loss`` l1 / l2      ``loss.recon_loss`` l1 / mse
``autoencoder_train.fake_3d_ratio`` (opt.)    ``loss.perceptual_fake_3d_ratio`` (3D; default 0.5, MONAI's)
``autoencoder_train.perceptual_network``      ``loss.perceptual_network`` (optional; default auto)
============================================  ===============================================

Example:
    >>> cfg, extras = from_medical({"data_base_dir": "/data", "autoencoder_def": {}, "autoencoder_train": {}},
    ...                            check_paths=False)
    >>> cfg.model.kind, cfg.data.subfolders, cfg.train.num_epochs
    ('klvae', ['edente', 'dente'], 100)
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ndvq.config.schema import Config
from ndvq.config.validate import validate_config
from ndvq.errors import ConfigError

__all__ = ["from_medical", "load_medical", "is_medical_config", "MedicalExtras", "MEDICAL_DEFAULTS", "MEDICAL_OPTIONAL"]

# The documented defaults of the medical vae_config.json (None: no default, the key is required).
MEDICAL_DEFAULTS: dict[str, Any] = {
    "data_base_dir": None,
    "run_dir": "runs/vae",
    "resume_ckpt": False,
    "checkpoint_dir": None,
    "data_source": "both",
    "train_split": 0.9,
    "val_dir": None,
    "augment": False,
    "spatial_dims": 2,
    "autoencoder_def": {
        "spatial_dims": 2, "in_channels": 1, "out_channels": 1, "latent_channels": 4,
        "channels": [64, 128, 256], "num_res_blocks": 2, "norm_num_groups": 32, "norm_eps": 1e-6,
        "attention_levels": [False, False, False], "with_encoder_nonlocal_attn": True,
        "with_decoder_nonlocal_attn": True,
    },
    "autoencoder_train": {
        "batch_size": 8, "patch_size": [256, 256], "max_epochs": 100, "val_interval": 1, "lr": 2.5e-5,
        "perceptual_weight": 1.0, "kl_weight": 1e-6, "recon_loss": "l1",
    },
}
# Keys a file may add (MONAI AutoencoderKL / PerceptualLoss options); None: not set (ndvq's/MONAI's default).
MEDICAL_OPTIONAL: dict[str, dict[str, Any]] = {
    "autoencoder_def": {"use_convtranspose": None, "include_fc": None, "use_combined_linear": None,
                        "use_flash_attention": None, "use_checkpoint": False},
    "autoencoder_train": {"fake_3d_ratio": None, "perceptual_network": "auto"},
}
_MONAI_LDM_KEYS = ("use_convtranspose", "include_fc", "use_combined_linear", "use_flash_attention")
_WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors")  # a checkpoint_dir with these is weights only (MONAI)
_SECTIONS = ("autoencoder_def", "autoencoder_train")
_GROUPS = ("paths", "data")  # optional grouping of the top-level keys
_SUBFOLDERS = {"edente": ["edente"], "dente": ["dente"], "both": ["edente", "dente"]}
# common names users bring from other configs -> the medical key
_ALIASES = {"learning_rate": "lr", "num_epochs": "max_epochs", "epochs": "max_epochs", "n_dims": "spatial_dims",
            "root": "data_base_dir", "data_dir": "data_base_dir", "resume": "resume_ckpt",
            "image_channels": "in_channels", "num_channels": "channels", "val_every": "val_interval"}


@dataclass
class MedicalExtras:
    """What the medical file says that is not part of :class:`~ndvq.config.Config`.

    Attributes:
        resume: checkpoint to resume from (``checkpoint_dir`` when ``resume_ckpt`` is true), else
            None; also set as ``config.run.resume``, which ``ndvq.train.loop.train`` continues from.
        val_every_epochs: the file's ``val_interval`` (also set as ``train.val_every_epochs``).
        source: the validated medical dict with every default filled in.
    """

    resume: Path | None = None
    val_every_epochs: int = 1
    source: dict = field(default_factory=dict)


def is_medical_config(d: dict) -> bool:
    """True when ``d`` looks like a medical ``vae_config.json`` (has ``autoencoder_def`` or ``autoencoder_train``)."""
    return isinstance(d, dict) and any(k in d for k in _SECTIONS)


# ----------------------------------------------------------------------------- value checks
def _err(key: str, msg: str) -> ConfigError:
    return ConfigError(f"medical config: {key} {msg}")


def _int(v, key: str, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _err(key, f"must be an integer, got {v!r}")
    if v < lo:
        raise _err(key, f"must be >= {lo}, got {v}")
    return v


def _float(v, key: str, lo: float = 0.0, strict: bool = False, hi: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        raise _err(key, f"must be a number, got {v!r}")
    if (v <= lo if strict else v < lo) or (hi is not None and v > hi):
        rng = f"{lo} {'<' if strict else '<='} value" + (f" <= {hi}" if hi is not None else "")
        raise _err(key, f"out of range ({rng}), got {v}")
    return float(v)


def _bool(v, key: str) -> bool:
    if not isinstance(v, bool):
        raise _err(key, f"must be true or false, got {v!r}")
    return v


def _choice(v, key: str, choices) -> str:
    if v not in choices:
        raise _err(key, f"must be one of {', '.join(repr(c) for c in choices)}, got {v!r}")
    return v


def _path(v, key: str, required: bool = False) -> str | None:
    if v is None or v == "":
        if required:
            raise _err(key, "is required (a folder path)")
        return None
    if not isinstance(v, str):
        raise _err(key, f"must be a path string, got {v!r}")
    return v


def _int_list(v, key: str) -> list[int]:
    if not isinstance(v, list) or not v:
        raise _err(key, f"must be a non-empty list of integers, got {v!r}")
    return [_int(x, f"{key}[{i}]") for i, x in enumerate(v)]


def _check_keys(d: dict, allowed: dict, where: str) -> None:
    for k in d:
        if k.startswith("_") or k in allowed:
            continue
        name = f"{where}.{k}" if where else k
        alias = [_ALIASES[k]] if _ALIASES.get(k) in allowed else []
        close = alias or difflib.get_close_matches(k, list(allowed), n=1, cutoff=0.5)
        if close:
            hint = f"; did you mean {(where + '.' if where else '') + close[0]!r}?"
        else:  # the right key in another section?
            home = [s for s in ("", *_SECTIONS) if k in (MEDICAL_DEFAULTS if not s else MEDICAL_DEFAULTS[s])]
            hint = f"; it belongs in {home[0] or 'the top level'}" if home else ""
            hint = hint or f"; valid keys here: {', '.join(sorted(allowed))}"
        raise ConfigError(f"medical config: unknown key {name!r}{hint}")


def _flatten_groups(d: dict) -> dict:
    """Merge optional ``"paths": {...}`` / ``"data": {...}`` groups into the top level."""
    out = {k: v for k, v in d.items() if k not in _GROUPS}
    for g in _GROUPS:
        if g in d:
            if not isinstance(d[g], dict):
                raise _err(g, f"must be a mapping of keys, got {type(d[g]).__name__}")
            for k, v in d[g].items():
                if k in out:
                    raise _err(f"{g}.{k}", "is given twice (in the group and at the top level)")
                out[k] = v
    return out


def _filled(d: dict) -> dict:
    """Check keys and fill documented defaults; returns a new dict."""
    if not isinstance(d, dict):
        raise ConfigError(f"medical config must be a JSON object, got {type(d).__name__}")
    d = _flatten_groups(d)
    _check_keys(d, MEDICAL_DEFAULTS, "")
    out = {k: v for k, v in MEDICAL_DEFAULTS.items() if k not in _SECTIONS}
    out.update({k: v for k, v in d.items() if k not in _SECTIONS and not k.startswith("_")})
    for s in _SECTIONS:
        sec = d.get(s, {})
        if not isinstance(sec, dict):
            raise _err(s, f"must be a mapping of keys, got {type(sec).__name__}")
        allowed = {**MEDICAL_DEFAULTS[s], **MEDICAL_OPTIONAL[s]}
        _check_keys(sec, allowed, s)
        out[s] = {**allowed, **{k: v for k, v in sec.items() if not k.startswith("_")}}
    return out


# ----------------------------------------------------------------------------- conversion
def _model_section(ad: dict, n_dims: int) -> dict:
    """``autoencoder_def`` (filled) -> the ``model`` section (ldm backbone + gaussian bottleneck)."""
    k = "autoencoder_def."
    ad_dims = _int(ad["spatial_dims"], k + "spatial_dims")
    if ad_dims != n_dims:
        raise ConfigError(
            f"medical config: spatial_dims mismatch: spatial_dims={n_dims} at the top level but "
            f"autoencoder_def.spatial_dims={ad_dims}; they must agree (2 for images, 3 for volumes)"
        )
    in_ch, out_ch = _int(ad["in_channels"], k + "in_channels"), _int(ad["out_channels"], k + "out_channels")
    if out_ch != in_ch:
        raise _err(k + "out_channels", f"({out_ch}) must equal in_channels ({in_ch}) for an autoencoder")
    latent = _int(ad["latent_channels"], k + "latent_channels")
    channels = _int_list(ad["channels"], k + "channels")
    n_res = ad["num_res_blocks"]
    if isinstance(n_res, list):  # MONAI: one per level
        if len(n_res) != len(channels):
            raise _err(k + "num_res_blocks", f"needs one entry per entry of channels ({len(channels)}) or one "
                                             f"number, got {len(n_res)}: {n_res}")
        n_res = [_int(n, f"{k}num_res_blocks[{i}]", lo=0) for i, n in enumerate(n_res)]
    else:
        n_res = _int(n_res, k + "num_res_blocks", lo=0)
    groups = _int(ad["norm_num_groups"], k + "norm_num_groups")
    for c in channels:
        if c % groups:
            raise _err(k + "norm_num_groups",
                       f"({groups}) must divide every entry of channels; {c} is not divisible by {groups}")
    eps = _float(ad["norm_eps"], k + "norm_eps", strict=True)
    attn = ad["attention_levels"]
    if not isinstance(attn, list) or not all(isinstance(a, bool) for a in attn):
        raise _err(k + "attention_levels", f"must be a list of true/false, got {attn!r}")
    if len(attn) != len(channels):
        raise _err(k + "attention_levels",
                   f"needs one entry per entry of channels ({len(channels)}: {channels}), got {len(attn)}: {attn}")
    enc_attn = _bool(ad["with_encoder_nonlocal_attn"], k + "with_encoder_nonlocal_attn")
    dec_attn = _bool(ad["with_decoder_nonlocal_attn"], k + "with_decoder_nonlocal_attn")
    monai = {m: _bool(ad[m], k + m) for m in _MONAI_LDM_KEYS if ad[m] is not None}
    return {"kind": "klvae", "backbone": "ldm", "bottleneck": "gaussian", "n_dims": n_dims, "in_channels": in_ch,
            "out_channels": out_ch, "embedding_dim": latent,
            "ldm": {"channels": channels, "num_res_blocks": n_res, "norm_num_groups": groups, "norm_eps": eps,
                    "attention_levels": attn, "with_encoder_nonlocal_attn": enc_attn,
                    "with_decoder_nonlocal_attn": dec_attn, **monai}}


def _train_sections(at: dict, n_dims: int, n_levels: int) -> tuple[dict, dict, list[int]]:
    """``autoencoder_train`` (filled) -> ``(train section, loss section, patch_size)``."""
    k = "autoencoder_train."
    batch = _int(at["batch_size"], k + "batch_size")
    patch = at["patch_size"]
    patch = [patch] * n_dims if isinstance(patch, int) and not isinstance(patch, bool) else patch
    patch = _int_list(patch, k + "patch_size")
    if len(patch) != n_dims:
        raise _err(k + "patch_size", f"needs {n_dims} entries for spatial_dims={n_dims}, got {len(patch)}: {patch}")
    factor = 2 ** (n_levels - 1)
    for p in patch:
        if p % factor:
            raise _err(k + "patch_size",
                       f"entries must be multiples of 2**(len(channels)-1) = {factor} (the model halves the size "
                       f"{n_levels - 1} times); {p} in {patch} is not")
    epochs = _int(at["max_epochs"], k + "max_epochs")
    val_every = _int(at["val_interval"], k + "val_interval")
    lr = _float(at["lr"], k + "lr", strict=True, hi=1.0)
    perc_w = _float(at["perceptual_weight"], k + "perceptual_weight")
    kl_w = _float(at["kl_weight"], k + "kl_weight")
    recon = _choice(at["recon_loss"], k + "recon_loss", ("l1", "l2"))
    network = _choice(at["perceptual_network"], k + "perceptual_network", ("auto", "lpips-vgg", "lpips-alex", "uniform"))
    ratio = at["fake_3d_ratio"]
    ratio = (0.5 if n_dims == 3 else None) if ratio is None else _float(ratio, k + "fake_3d_ratio", strict=True, hi=1.0)
    train = {"batch_size": batch, "num_epochs": epochs, "max_steps": None, "learning_rate": lr,
             "lr_schedule": "constant", "weight_ema": None, "scale_lr_by_world_size": True, "val_every_epochs": val_every, "val_batches": None}
    loss = {"recon_loss": "l1" if recon == "l1" else "mse", "perceptual_weight": perc_w, "kl_weight": kl_w,
            "perceptual_network": network, "perceptual_fake_3d_ratio": ratio}
    return train, loss, patch


def check_medical_paths(cfg: Config, source: str | None = None) -> None:
    """The folders of a converted medical config exist, checked after every override has applied:
    ``data.root`` (the file's ``data_base_dir``) with its ``data.subfolders`` (from ``data_source``),
    ``data.val_dir`` and the checkpoint to resume or start from (``checkpoint_dir`` when ``resume_ckpt``).

    Args:
        cfg: the converted config, overrides applied.
        source: the file's ``data_source``, named in the message. Default None.
    """
    d, r = cfg.data, cfg.run
    base = Path(str(d.root)).expanduser()
    if not base.is_dir():
        raise _err("data_base_dir", f"{str(d.root)!r} is not an existing folder (or give data.root=...)")
    missing = [s for s in d.subfolders or () if not (base / s).is_dir()]
    if missing:
        present = sorted(p.name for p in base.iterdir() if p.is_dir())
        what = f"{source!r} " if source else ""
        raise _err("data_source", f"{what}needs the subfolder(s) {missing} in {str(d.root)!r}; found {present}")
    if d.val_dir is not None and not Path(str(d.val_dir)).expanduser().is_dir():
        raise _err("val_dir", f"{str(d.val_dir)!r} is not an existing folder")
    resume = r.resume or r.init_from
    if resume is not None and not Path(str(resume)).expanduser().exists():
        raise _err("checkpoint_dir", f"{str(resume)!r} does not exist (resume_ckpt is true)")


def _paths_and_data(m: dict, n_dims: int) -> tuple[dict, dict]:
    """The top-level keys (filled) -> ``(data section without patch_size, run section)``."""
    source = _choice(m["data_source"], "data_source", tuple(_SUBFOLDERS))
    root = _path(m["data_base_dir"], "data_base_dir", required=True)
    val_dir = _path(m["val_dir"], "val_dir")
    split = _float(m["train_split"], "train_split", strict=True, hi=1.0)
    if split == 1.0 and val_dir is None:
        raise _err("train_split", "is 1.0 and val_dir is null: nothing is left for validation; "
                                  "use e.g. 0.9 or set val_dir")
    augment = _bool(m["augment"], "augment")
    run_dir = _path(m["run_dir"], "run_dir", required=True)
    resume_flag = _bool(m["resume_ckpt"], "resume_ckpt")
    ckpt = _path(m["checkpoint_dir"], "checkpoint_dir")
    if resume_flag and ckpt is None:
        raise _err("checkpoint_dir", "must be set when resume_ckpt is true (the checkpoint or run folder to resume)")
    data = {"kind": "image" if n_dims == 2 else "volume", "root": root, "val_dir": val_dir, "train_split": split,
            "subfolders": _SUBFOLDERS[source], "augment": augment}
    run_path = Path(run_dir).expanduser()
    resume = Path(ckpt).expanduser() if resume_flag else None
    weights_only = resume is not None and (resume.suffix in _WEIGHT_SUFFIXES or (
        (resume / "model.safetensors").is_file() and not (resume / "checkpoints").is_dir()))
    run = {"root": str(run_path.parent), "name": run_path.name,
           "resume": None if resume is None or weights_only else str(resume),
           "init_from": str(resume) if weights_only else None}
    return data, run


def from_medical(d: dict, check_paths: bool = True) -> tuple[Config, MedicalExtras]:
    """Validate a medical ``vae_config.json`` dict and convert it.

    Args:
        d: the parsed JSON.
        check_paths: also check that ``data_base_dir`` and the subfolders chosen by
            ``data_source``, ``val_dir`` and (when ``resume_ckpt``) ``checkpoint_dir`` exist. Default True.

    Returns:
        ``(config, extras)``: the ndvq :class:`~ndvq.config.Config` (``model.kind="klvae"``: ldm
        backbone, gaussian bottleneck) and a :class:`MedicalExtras` (resume checkpoint, validation
        interval in epochs).

    Raises:
        ConfigError: an unknown key (with the closest valid one) or a bad value; the message names
            the key, the value and what is allowed.
    """
    m = _filled(d)
    n_dims = _int(m["spatial_dims"], "spatial_dims")
    if n_dims not in (2, 3):
        raise _err("spatial_dims", f"must be 2 (images) or 3 (volumes), got {n_dims}")
    model = _model_section(m["autoencoder_def"], n_dims)
    train, loss, patch = _train_sections(m["autoencoder_train"], n_dims, len(model["ldm"]["channels"]))
    train["activation_checkpointing"] = _bool(m["autoencoder_def"]["use_checkpoint"], "autoencoder_def.use_checkpoint")
    data, run = _paths_and_data(m, n_dims)
    data["patch_size"] = patch
    if n_dims == 2:
        data["channels"] = model["in_channels"]
    cfg = validate_config({"model": model, "data": data, "train": train, "loss": loss, "run": run})
    if check_paths:
        check_medical_paths(cfg, m["data_source"])
    resume = Path(run["resume"]) if run["resume"] is not None else None
    return cfg, MedicalExtras(resume=resume, val_every_epochs=train["val_every_epochs"], source=m)


def load_medical(path: str | Path, check_paths: bool = True) -> tuple[Config, MedicalExtras]:
    """Read a ``vae_config.json`` file and convert it with :func:`from_medical`."""
    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read medical config {str(p)!r}: {e}") from None
    return from_medical(d, check_paths=check_paths)
