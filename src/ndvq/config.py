"""The validated configuration schema.

Every section is a pydantic model with ``extra="forbid"`` so an unknown key is an
error. Field names match the keyword arguments of the classes that ``builders.py``
constructs, so builders stay thin. Only ``builders.py`` reads these objects.

The full schema as YAML (every key with its default) is printed by
``ndvq train --print-config``.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "QuantizerConfig",
    "HierarchicalConfig",
    "KLVAEConfig",
    "ModelConfig",
    "DataConfig",
    "TrainConfig",
    "LossConfig",
    "RunConfig",
    "Config",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _power_of_two_list(v: list[int], name: str) -> list[int]:
    for f in v:
        if f < 1 or (f & (f - 1)) != 0:
            raise ValueError(f"{name} factors must be powers of two (1, 2, 4, ...), got {f} in {v}")
    return v


class QuantizerConfig(_Section):
    """``model.quantizer``: which quantizer and its options (see docs/quantizers.md)."""

    kind: Literal["vq", "fsq", "lfq", "simvq", "residual", "grouped"] = "vq"
    # --- vector quantizer (vq; also used per level/group by residual and grouped) ---
    update: Literal["ema", "gradient"] = "ema"
    codebook_lr: float | None = Field(None, gt=0, description="separate LR for a gradient-updated codebook")
    init: Literal["kmeans", "random"] = "kmeans"
    kmeans_iters: int = Field(10, ge=0, le=1000)
    kmeans_batches: int = Field(1, ge=1, le=1000, description="batches of encoder outputs collected for k-means init")
    restart: Literal["batch", "replay", "none"] = "batch"
    restart_interval: int = Field(1, ge=1, description="check for dead codes every N steps")
    restart_share: float = Field(0.5, gt=0, le=1, description="a code is dead when its EMA count is below this "
                                 "fraction of the average code's (scale-free: any tokens-per-step / codes ratio)")
    restart_threshold: float | None = Field(None, ge=0, description="absolute EMA count below which a code is "
                                            "dead (replaces restart_share when set)")
    restart_sampling: Literal["error", "uniform"] = Field(
        "error", description="new values for dead codes: encoder outputs drawn in proportion to their "
                             "quantization error (error) or uniformly (uniform)")
    replay_size: int = Field(8192, ge=1, description="replay buffer of recent encoder outputs (restart=replay)")
    ema_accumulate_steps: int = Field(1, ge=1, description="steps of statistics accumulated before an EMA update")
    ema_tokens_per_code: float = Field(0.0, ge=0, description="an EMA update also waits until the accumulated "
                                       "statistics hold this many tokens per code (0: every ema_accumulate_steps)")
    entropy_weight: float = Field(0.0, ge=0, description="lambda for KL(q(c) || uniform) on the batch code distribution")
    cosine: bool = Field(True, description="l2-normalised tokens and codes (with codebook_dim: ViT-VQGAN's lookup)")
    codebook_dim: int | None = Field(8, ge=1, description="low-dimensional lookup with in/out projections "
                                     "(null, or >= embedding_dim: look up in embedding_dim itself)")
    rotation_trick: bool = False
    sample_temperature: float = Field(0.0, ge=0, description="stochastic code sampling temperature (training only)")
    grow_to: int | None = Field(None, ge=2, description="grow the codebook to this size at grow_at_step")
    grow_at_step: int = Field(0, ge=0)
    # --- residual / grouped ---
    num_quantizers: int = Field(4, ge=1, le=64)
    quantizer_dropout: float = Field(0.0, ge=0, le=1)
    groups: int = Field(2, ge=1, le=64)
    # --- fsq / lfq ---
    levels: list[int] = Field(default_factory=lambda: [8, 5, 5, 5])
    lfq_entropy_weight: float = Field(0.1, ge=0)
    lfq_diversity_gamma: float = Field(1.0, ge=0)


class HierarchicalConfig(_Section):
    """``model.top``: the top level of a two-level VQ-VAE-2 (``model.kind=hierarchical``)."""

    downsample: list[int] = Field(default_factory=lambda: [2, 2])
    n_codes: int | None = Field(None, ge=2, description="defaults to model.n_codes")
    embedding_dim: int | None = Field(None, ge=1, description="defaults to model.embedding_dim")

    _check = field_validator("downsample")(lambda cls, v: _power_of_two_list(v, "model.top.downsample"))


class KLVAEConfig(_Section):
    """``model.klvae``: architecture of the continuous KL-VAE (``model.kind=klvae``)."""

    latent_channels: int = Field(4, ge=1)
    channels: list[int] = Field(default_factory=lambda: [64, 128, 256], min_length=1)
    num_res_blocks: int = Field(2, ge=0)
    norm_num_groups: int = Field(32, ge=1)
    norm_eps: float = Field(1e-6, gt=0)
    attention_levels: list[bool] = Field(default_factory=lambda: [False, False, False])
    with_encoder_nonlocal_attn: bool = True
    with_decoder_nonlocal_attn: bool = True

    @model_validator(mode="after")
    def _check(self) -> KLVAEConfig:
        for c in self.channels:
            if c % self.norm_num_groups:
                raise ValueError(
                    f"norm_num_groups ({self.norm_num_groups}) must divide every entry of channels; "
                    f"{c} is not divisible by {self.norm_num_groups}"
                )
        if len(self.attention_levels) != len(self.channels):
            raise ValueError(
                f"attention_levels needs one entry per entry of channels ({len(self.channels)}), "
                f"got {len(self.attention_levels)}"
            )
        return self


class ModelConfig(_Section):
    """``model``: the autoencoder. Names follow the VQ-VAE tuning guide."""

    kind: Literal["vqvae", "hierarchical", "klvae"] = "vqvae"
    n_dims: int = Field(2, ge=1, le=3)
    in_channels: int = Field(3, ge=1)
    out_channels: int | None = Field(None, ge=1, description="defaults to in_channels")
    n_hiddens: int = Field(128, ge=2)
    n_res_layers: int = Field(2, ge=0)
    downsample: list[int] = Field(default_factory=lambda: [4, 4], min_length=1, max_length=3)
    embedding_dim: int = Field(64, ge=1)
    n_codes: int = Field(512, ge=2)
    codebook_beta: float = Field(0.25, ge=0)
    recon_loss_factor: float = Field(1.0, gt=0)
    recon_loss: Literal["mse", "l1"] = "mse"
    n_head: int = Field(2, ge=0, description="attention heads in residual blocks; 0 turns attention off")
    attn_type: Literal["axial", "full"] = "axial"
    attn_dropout: float = Field(0.0, ge=0, lt=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    norm: Literal["batch", "group"] = "batch"
    num_groups: int = Field(32, ge=1)
    ema_decay: float = Field(0.99, gt=0, lt=1)
    quantizer: QuantizerConfig = Field(default_factory=QuantizerConfig)
    top: HierarchicalConfig = Field(default_factory=HierarchicalConfig)
    klvae: KLVAEConfig = Field(default_factory=KLVAEConfig)

    _check_ds = field_validator("downsample")(lambda cls, v: _power_of_two_list(v, "model.downsample"))

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.kind != "klvae" and len(self.downsample) not in (1, self.n_dims):
            raise ValueError(
                f"model.downsample needs 1 or n_dims={self.n_dims} entries, got {len(self.downsample)}: {self.downsample}"
            )
        if self.n_head and self.n_hiddens % self.n_head:
            raise ValueError(f"model.n_hiddens ({self.n_hiddens}) must be divisible by model.n_head ({self.n_head})")
        return self


class DataConfig(_Section):
    """``data``: which dataset and how it is read. Options apply to the kinds named in their description."""

    kind: Literal["samples", "image", "video", "audio", "series", "volume"] = "samples"
    root: Path | None = Field(None, description="data folder (all kinds but samples)")
    val_dir: Path | None = Field(None, description="separate validation folder; overrides train_split")
    train_split: float = Field(0.9, gt=0, le=1, description="fraction of files for training when no test/ folder or val_dir")
    split_seed: int = 0
    subfolders: list[str] | None = Field(None, description="only these subfolders of root (image, volume)")
    extensions: list[str] | None = Field(None, description="file extensions to read; default depends on kind")
    channels: int | None = Field(None, ge=1, description="convert to this many channels (image: 1 gray, 3 RGB, 4 RGBA)")
    resolution: list[int] | None = Field(None, description="resize/crop target (image, video)")
    patch_size: list[int] | None = Field(None, description="random crop/patch size for training; centre patch for val (image, volume)")
    patches_per_item: int = Field(1, ge=1, description="random patches cut from each file per epoch of the train split (image, volume with patch_size)")
    crop: Literal["center", "random", "resize", "none"] = "center"
    augment: bool = False
    sequence_length: int = Field(16, ge=1, description="frames per clip (video)")
    frame_stride: int = Field(1, ge=1, description="take every n-th frame (video)")
    clip_stride: int | None = Field(None, ge=1, description="frames between clip starts (video); default sequence_length*frame_stride")
    sample_rate: int | None = Field(None, ge=1, description="resample to this rate (audio)")
    mono: bool = True
    segment_length: int = Field(16384, ge=1, description="samples per window (audio) / time steps per window (series)")
    hop_length: int | None = Field(None, ge=1, description="hop between windows (audio, series); default segment_length")
    normalize: Literal["peak", "rms", "none"] = "peak"
    standardize: bool = Field(True, description="per-channel z-score with train-split statistics (series)")
    intensity: Literal["percentile", "ct", "zscore", "none"] = "percentile"
    percentiles: tuple[float, float] = (0.5, 99.5)
    ct_window: tuple[float, float] = (-1000.0, 1000.0)
    sample_patches: int = Field(2048, ge=1, description="patches cut from the built-in sample images (samples)")


class LossConfig(_Section):
    """``loss``: extra objectives beyond the model's own (perceptual, adversarial, KL)."""

    kl_weight: float = Field(1e-6, ge=0, description="KL-VAE only")
    perceptual_weight: float = Field(0.0, ge=0)
    perceptual_weights: Path | None = Field(None, description="local file with the perceptual network's weights")
    perceptual_slices: int = Field(8, ge=1, description="3D: slices per axis fed to the 2D perceptual network")
    adversarial_weight: float = Field(0.0, ge=0)
    adversarial_loss: Literal["hinge", "lsgan"] = "lsgan"
    adversarial_warmup_epochs: int = Field(0, ge=0, description="epochs before the discriminator switches on")
    disc_learning_rate: float | None = Field(None, gt=0, description="defaults to train.learning_rate")
    disc_channels: int = Field(64, ge=1)
    disc_layers: int = Field(3, ge=1, le=6)


class TrainConfig(_Section):
    """``train``: optimisation, schedule, precision, devices and intervals."""

    max_steps: int | None = Field(2000, ge=1)
    num_epochs: int | None = Field(None, ge=1, description="when set, training stops at whichever of max_steps/num_epochs comes first")
    batch_size: int = Field(32, ge=1, description="per device")
    learning_rate: float = Field(3e-4, gt=0, le=1)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    lr_schedule: Literal["constant", "cosine", "cyclic"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine/cyclic floor as a fraction of learning_rate")
    cycle_steps: int = Field(1000, ge=1, description="period of the cyclic schedule")
    grad_clip: float | None = Field(1.0, gt=0)
    grad_accum: int = Field(1, ge=1)
    precision: Literal["32", "32-true", "bf16-mixed", "16-mixed"] = "32"
    seed: int = 0
    val_interval: int = Field(250, ge=1, description="steps between validations")
    val_every_epochs: int | None = Field(None, ge=1, description="when set, validate, checkpoint and write samples at the end of every N-th epoch instead of every val_interval/ckpt_interval/sample_interval steps (medical val_interval)")
    val_batches: int | None = Field(20, ge=1, description="batches per validation (None: the whole split)")
    ckpt_interval: int = Field(250, ge=1)
    keep_checkpoints: int = Field(2, ge=1, description="best checkpoints kept beside last")
    sample_interval: int = Field(500, ge=1)
    log_interval: int = Field(10, ge=1)
    usage_window: int = Field(100, ge=1, description="steps in the sliding code-usage window")
    num_workers: int = Field(0, ge=0)
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | str = 1
    num_nodes: int = Field(1, ge=1)
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    scale_lr_by_world_size: bool = True
    max_nonfinite_steps: int = Field(20, ge=1)
    compile: bool = False
    doctor_warnings: bool = True

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.max_steps is None and self.num_epochs is None:
            raise ValueError("set train.max_steps or train.num_epochs (both are None)")
        return self


class RunConfig(_Section):
    """``run``: where outputs go."""

    name: str | None = Field(None, description="run folder name; default: <model.kind>-<data.kind>-<timestamp>")
    root: Path = Path("runs")
    resume: Path | None = Field(None, description="run directory or checkpoint to continue (like --resume; set by the medical resume_ckpt + checkpoint_dir)")


class Config(_Section):
    """The whole configuration."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    run: RunConfig = Field(default_factory=RunConfig)


# ---------------------------------------------------------------------------------------------
# Loading, merging and validating (file + key=value overrides)
# ---------------------------------------------------------------------------------------------

__all__ += [
    "ConfigError",
    "QUICKSTART",
    "load_config",
    "parse_overrides",
    "apply_overrides",
    "validate_config",
    "config_to_dict",
    "config_to_yaml",
    "all_keys",
    "schema_markdown",
]


class ConfigError(ValueError):
    """A bad config file, key or value. The message is one line, ready to show to a user."""


# The built-in default run (`ndvq train` with no arguments): a small VQ-VAE on the built-in
# sample images that trains in a few minutes on 2 CPU cores. `configs/default.yaml` holds the
# same values (a test checks they agree).
QUICKSTART: dict = {
    "model": {"n_dims": 2, "in_channels": 3, "n_hiddens": 32, "n_res_layers": 1, "downsample": [4, 4],
              "embedding_dim": 16, "n_codes": 128, "n_head": 0, "norm": "group", "num_groups": 8},
    "data": {"kind": "samples", "patch_size": [32, 32], "sample_patches": 2048},
    "train": {"max_steps": 600, "batch_size": 32, "learning_rate": 1e-3, "lr_schedule": "cosine",
              "warmup_steps": 50, "val_interval": 200, "val_batches": 4, "ckpt_interval": 200,
              "sample_interval": 200, "log_interval": 20, "usage_window": 50},
}


def _load_file(path: str | Path) -> dict:
    """Read a YAML / TOML / JSON file into a dict (format from the extension; YAML otherwise)."""
    import json

    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        text = p.read_text()
        suffix = p.suffix.lower()
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except Exception as e:  # any parser error -> one line
        msg = " ".join(str(e).split())
        raise ConfigError(f"cannot read config {str(p)!r}: {type(e).__name__}: {msg}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {str(p)!r} must hold a mapping of sections, got a {type(data).__name__}")
    return data


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _parse_value(text: str):
    """A command-line value: YAML scalar/list syntax (``3e-4`` is a float, ``[4,4]`` a list, ``null`` None)."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        return float(value)  # PyYAML reads "3e-4" as a string (YAML 1.1); users mean a float
    return value


def parse_overrides(items: list[str] | tuple[str, ...]) -> list[tuple[str, object]]:
    """``["train.learning_rate=3e-4", "model.downsample=[2,2]"]`` -> ``[(key, value), ...]``.

    Values are parsed with ``yaml.safe_load``. A missing ``=`` is a :class:`ConfigError`.
    """
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.learning_rate=3e-4)")
        out.append((key, _parse_value(value)))
    return out


def all_keys(model: type[BaseModel] = None, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, e.g. ``["model.kind", ..., "model.quantizer.kind", ...]``."""
    model = model or Config
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += all_keys(ann, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def _section_at(path: list[str]) -> type[BaseModel] | None:
    model = Config
    for part in path:
        field = model.model_fields.get(part)
        ann = field.annotation if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def _unknown_key_error(key: str) -> ConfigError:
    keys = all_keys()
    leaf = key.split(".")[-1]
    by_leaf = {k.split(".")[-1]: k for k in reversed(keys)}
    match = [by_leaf[leaf]] if leaf in by_leaf else []  # right name, wrong section
    match = match or difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    if not match:  # a close leaf name in any section
        leaf_match = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.6)
        match = [by_leaf[leaf_match[0]]] if leaf_match else []
    hint = f"; did you mean {match[0]!r}?" if match else "; see `ndvq train --print-config` for all keys"
    return ConfigError(f"unknown config key {key!r}{hint}")


def _check_keys(data: dict, path: list[str] | None = None) -> None:
    """Raise a :class:`ConfigError` naming the first unknown key (with the closest valid one)."""
    path = path or []
    section = _section_at(path)
    if section is None:
        return
    for k, v in data.items():
        if k not in section.model_fields:
            raise _unknown_key_error(".".join([*path, str(k)]))
        if isinstance(v, dict) and _section_at([*path, k]) is not None:
            _check_keys(v, [*path, k])


def apply_overrides(data: dict, overrides: list[tuple[str, object]]) -> dict:
    """Set dotted ``key=value`` pairs in a nested dict (a copy). Unknown keys raise :class:`ConfigError`."""
    import copy

    data = copy.deepcopy(data)
    for key, value in overrides:
        parts = key.split(".")
        if _section_at(parts[:-1]) is None or parts[-1] not in _section_at(parts[:-1]).model_fields:
            raise _unknown_key_error(key)
        node = data
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return data


def _allowed(loc: tuple) -> str:
    """The constraints of the field at ``loc`` as text, e.g. ``"0 < value <= 1"``."""
    model, field = Config, None
    for part in loc:
        if not isinstance(part, str) or model is None or part not in model.model_fields:
            break
        field = model.model_fields[part]
        ann = field.annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    if field is None:
        return ""
    lo = hi = ""
    for m in field.metadata:
        for attr, sym, side in (("ge", "<=", "lo"), ("gt", "<", "lo"), ("le", "<=", "hi"), ("lt", "<", "hi")):
            v = getattr(m, attr, None)
            if v is not None:
                if side == "lo":
                    lo = f"{v} {sym} "
                else:
                    hi = f" {sym} {v}"
    ann = field.annotation
    if "Literal" in str(ann):
        return ""  # pydantic's message already lists the choices
    ann = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
    rng = f"{lo}value{hi}" if (lo or hi) else ""
    return f"allowed: {rng} ({ann})" if rng else f"expected {ann}"


def _format_validation_error(err) -> str:
    """A pydantic ``ValidationError`` -> one line naming the key, the value and the allowed range."""
    parts = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-after")))
        key = ".".join(str(p) for p in loc) or "config"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            return str(_unknown_key_error(key))
        if e["type"] in ("value_error", "assertion_error"):
            parts.append(f"{key}: {msg}")
            continue
        allowed = _allowed(loc)
        got = e.get("input")
        parts.append(f"bad value for {key}={got!r}: {msg}" + (f"; {allowed}" if allowed else ""))
    return "invalid config: " + " | ".join(parts)


def validate_config(data: dict) -> Config:
    """A nested dict -> :class:`Config`; unknown keys and bad values raise a one-line :class:`ConfigError`."""
    from pydantic import ValidationError

    if not isinstance(data, dict):
        raise ConfigError(f"config must be a mapping of sections, got {type(data).__name__}")
    _check_keys(data)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e)) from None


def _is_medical(data: dict) -> bool:
    return "autoencoder_def" in data or "autoencoder_train" in data  # one is enough: typos in the other get a hint


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                base: dict | Config | None = None, config_format: str = "auto") -> Config:
    """Load, merge and validate a configuration.

    Args:
        path: YAML (``.yaml``/``.yml``), TOML (``.toml``) or JSON (``.json``) file; a medical
            ``vae_config.json`` (keys ``autoencoder_def`` + ``autoencoder_train``) is detected and
            converted by :func:`ndvq.config_medical.from_medical`. Default None: use ``base``.
        overrides: ``key=value`` strings applied on top (values parsed with ``yaml.safe_load``).
        base: the starting point when ``path`` is None (a dict or Config). Default None:
            :data:`QUICKSTART` (the built-in default run).
        config_format: ``"auto"`` (default: a medical file is recognised by its keys), ``"ndvq"``
            (always read as ndvq's own schema) or ``"medical"`` (always convert as a medical
            ``vae_config.json``; a file without its sections is an error naming them).

    Returns:
        The validated :class:`Config`.

    Raises:
        ConfigError: unreadable file, unknown key (with the closest valid key) or bad value
            (with the allowed range); the message is one line.

    Example:
        >>> cfg = load_config(None, ["model.n_codes=256", "train.learning_rate=3e-4"])
        >>> cfg.model.n_codes, cfg.train.learning_rate
        (256, 0.0003)
    """
    if config_format not in ("auto", "ndvq", "medical"):
        raise ConfigError(f"config_format must be one of 'auto', 'ndvq', 'medical', got {config_format!r}")
    if path is not None:
        data = _load_file(path)
        if config_format == "medical" and not _is_medical(data):
            raise ConfigError(f"{str(path)!r} is not a medical vae_config.json: expected top-level keys "
                              f"'autoencoder_def' and 'autoencoder_train', got {sorted(data)}")
        if config_format == "medical" or (config_format == "auto" and _is_medical(data)):
            data = _from_medical(data, path)
    elif isinstance(base, Config):
        data = config_to_dict(base)
    elif base is not None:
        data = base
    else:
        data = QUICKSTART
    data = apply_overrides(data, parse_overrides(list(overrides)))
    return validate_config(data)


def _from_medical(data: dict, path) -> dict:
    try:
        from ndvq.config_medical import from_medical
    except ImportError as e:
        raise ConfigError(f"{str(path)!r} looks like a medical vae_config.json but ndvq.config_medical "
                          f"is not available ({e})") from None
    try:
        cfg, extras = from_medical(data)
    except ConfigError:
        raise
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"cannot convert medical config {str(path)!r}: {e}") from None
    if getattr(extras, "resume", None) is not None:
        import sys

        print(f"ndvq: medical config: resume_ckpt is true; continuing from checkpoint_dir={extras.resume}", file=sys.stderr)
    return config_to_dict(cfg)


def config_to_dict(cfg: Config) -> dict:
    """The config as plain JSON-able Python values (paths as strings, tuples as lists)."""
    return cfg.model_dump(mode="json")


def config_to_yaml(cfg: Config) -> str:
    """The fully resolved config as YAML text (the run directory's ``config.yaml``)."""
    import yaml

    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)


def schema_markdown() -> str:
    """The key reference of docs/training.md: one Markdown table row per key (type, default, range, meaning)."""
    rows = ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, f"{prefix}{name}.")
                continue
            default = field.get_default(call_default_factory=True)
            default = default if not isinstance(default, Path) else str(default)
            typ = str(ann).replace("typing.", "").replace("pathlib.", "").replace("<class '", "").replace("'>", "")
            allowed = _allowed((*prefix.rstrip(".").split("."), name) if prefix else (name,))
            allowed = allowed.removeprefix("allowed: ").removeprefix("expected ")
            if "Literal" in typ:
                allowed, typ = typ.replace("Literal[", "").rstrip("]"), "choice"
            elif "value" not in allowed:
                allowed = ""
            desc = (field.description or "").replace("|", "\\|")
            rows.append(f"| `{prefix}{name}` | {typ.replace('|', 'or')} | `{default}` | "
                        f"{allowed.split(' (')[0].replace('|', 'or')} | {desc} |")

    walk(Config, "")
    return "\n".join(rows)
