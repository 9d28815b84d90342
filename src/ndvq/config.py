"""The validated configuration schema.

Every section is a pydantic model with ``extra="forbid"`` so an unknown key is an
error. Field names match the keyword arguments of the classes that ``builders.py``
constructs, so builders stay thin. Only ``builders.py`` reads these objects.

The full schema as YAML (every key with its default) is printed by
``ndvq train --print-config``.
"""

from __future__ import annotations

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
    restart_threshold: float = Field(1.0, ge=0, description="EMA usage count below which a code is dead")
    replay_size: int = Field(8192, ge=1, description="replay buffer of recent encoder outputs (restart=replay)")
    ema_accumulate_steps: int = Field(1, ge=1, description="steps of statistics accumulated before an EMA update")
    entropy_weight: float = Field(0.0, ge=0, description="lambda for KL(q(c) || uniform) on the batch code distribution")
    cosine: bool = False
    codebook_dim: int | None = Field(None, ge=1, description="low-dimensional lookup with in/out projections")
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
    patch_size: list[int] | None = Field(None, description="random crop/patch size (image, volume)")
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


class Config(_Section):
    """The whole configuration."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    run: RunConfig = Field(default_factory=RunConfig)
