"""The validated configuration schema: one pydantic model per section, every check in one place.

Each section's field names are the keyword arguments of the constructor it configures
(``tests/test_passthrough.py`` checks this), so building is ``Class(**section.model_dump())``:

================  =====================================================================
section           passed to
================  =====================================================================
``model``         ``ndvq.models.Autoencoder(**cfg.model.model_dump(exclude={"kind", "top"}))``
                  (``HierarchicalAutoencoder``: ``exclude={"kind"}``)
``model.videogpt``  ``VideoGPTBackbone`` options (``model.backbone=videogpt``)
``model.ldm``     ``LDMBackbone`` options (``model.backbone=ldm``)
``model.quantizer``  ``ndvq.quantizers.build_quantizer`` options (quantizer bottlenecks)
``loss``          ``ndvq.objectives.Objective(**cfg.loss.model_dump(exclude={"disc_learning_rate"}), ...)``
``data``          ``ndvq.data.create_dataset(**cfg.data.model_dump(), split=...)``
================  =====================================================================

Every section forbids unknown keys. ``model.kind`` is a preset (``vqvae`` = videogpt + vq,
``hierarchical`` = two-level VQ-VAE-2 on videogpt, ``klvae`` = ldm + gaussian);
``model.backbone``/``model.bottleneck``/``model.embedding_dim`` left at ``None`` are filled in from
it, so a dumped config always shows concrete values.

Example:
    >>> cfg = Config.model_validate({"model": {"kind": "klvae"}})
    >>> cfg.model.backbone, cfg.model.bottleneck, cfg.model.embedding_dim
    ('ldm', 'gaussian', 4)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "QuantizerConfig",
    "VideoGPTConfig",
    "LDMConfig",
    "HierarchicalConfig",
    "ModelConfig",
    "DataConfig",
    "TrainConfig",
    "LossConfig",
    "RunConfig",
    "Config",
    "PRESETS",
    "QUANTIZER_BOTTLENECKS",
    "all_keys",
    "field_at",
    "allowed_text",
    "schema_markdown",
]

#: ``model.kind`` -> (backbone, bottleneck) used when those keys are None.
PRESETS = {"vqvae": ("videogpt", "vq"), "hierarchical": ("videogpt", "vq"), "klvae": ("ldm", "gaussian")}
#: The bottlenecks that are quantizers (``model.quantizer`` applies to them).
QUANTIZER_BOTTLENECKS = ("vq", "residual", "grouped", "fsq", "lfq", "simvq")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _power_of_two_list(v: list[int], name: str) -> list[int]:
    for f in v:
        if f < 1 or (f & (f - 1)) != 0:
            raise ValueError(f"{name} factors must be powers of two (1, 2, 4, ...), got {f} in {v}")
    return v


class QuantizerConfig(_Section):
    """``model.quantizer``: options of the quantizer bottlenecks (see docs/quantizers.md)."""

    beta: float | None = Field(None, ge=0, description="commitment weight of the quantizer's own loss; null: the "
                                "kind's default (0.5 for vq, 0.25 for lfq, simvq, residual, grouped)")
    ema_decay: float = Field(0.99, gt=0, lt=1, description="decay of EMA-updated codebooks")
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
    entropy_temperature: float = Field(10.0, gt=0, description="softmax temperature (on squared distances) of "
                                       "the entropy regulariser (entropy_weight > 0)")
    cosine: bool = Field(True, description="l2-normalised tokens and codes (with codebook_dim: ViT-VQGAN's lookup)")
    codebook_dim: int | None = Field(8, ge=1, description="low-dimensional lookup with in/out projections "
                                     "(null, or >= embedding_dim: look up in embedding_dim itself)")
    rotation_trick: bool = False
    sample_temperature: float = Field(0.0, ge=0, description="stochastic code sampling temperature (training only)")
    grow_to: int | None = Field(None, ge=2, description="grow the codebook to this size at grow_at_step")
    grow_at_step: int = Field(0, ge=0)
    chunk_rows: int | None = Field(None, ge=1, description="rows per nearest-code search chunk (peak memory "
                                   "chunk_rows x n_codes floats); null: automatic")
    # --- residual / grouped ---
    num_quantizers: int = Field(4, ge=1, le=64)
    quantizer_dropout: float = Field(0.0, ge=0, le=1)
    groups: int = Field(2, ge=1, le=64)
    # --- fsq / lfq ---
    fsq_levels: list[int] = Field(default_factory=lambda: [8, 5, 5, 5], min_length=1,
                                  description="FSQ: quantisation levels per latent channel (codes = their product)")
    lfq_entropy_weight: float = Field(0.1, ge=0)
    lfq_diversity_gamma: float = Field(1.0, ge=0)


class VideoGPTConfig(_Section):
    """``model.videogpt``: the VideoGPT-style residual/attention backbone (``model.backbone=videogpt``)."""

    n_hiddens: int = Field(128, ge=2, description="hidden channels")
    num_res_blocks: int = Field(2, ge=0, description="residual blocks after the strided convolutions")
    downsample: list[int] = Field(default_factory=lambda: [4, 4], min_length=1, max_length=3,
                                  description="total downsampling per axis (powers of two; one entry = every axis)")
    n_head: int = Field(2, ge=0, description="attention heads in residual blocks; 0 turns attention off")
    attn_type: Literal["axial", "full"] = "axial"
    attn_dropout: float = Field(0.0, ge=0, lt=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    norm: Literal["channel", "batch", "group"] = Field(
        "channel", description="channel: layer norm over each position's channels (the same on crops and whole "
                               "inputs); batch: running statistics; group: per-sample group statistics")
    norm_num_groups: int = Field(32, ge=1, description="groups of norm=group")

    _check_ds = field_validator("downsample")(lambda cls, v: _power_of_two_list(v, "model.videogpt.downsample"))

    @model_validator(mode="after")
    def _check(self) -> VideoGPTConfig:
        if self.n_head and self.n_hiddens % self.n_head:
            raise ValueError(f"model.videogpt.n_hiddens ({self.n_hiddens}) must be divisible by "
                             f"model.videogpt.n_head ({self.n_head})")
        return self


class LDMConfig(_Section):
    """``model.ldm``: the multi-level LDM/MONAI-style backbone (``model.backbone=ldm``)."""

    channels: list[int] = Field(default_factory=lambda: [64, 128, 256], min_length=1,
                                description="channels per level; the size halves len(channels) - 1 times")
    num_res_blocks: int | list[int] = Field(2, description="residual blocks per level (one number, or one per level)")
    norm_num_groups: int = Field(32, ge=1)
    norm_eps: float = Field(1e-6, gt=0)
    attention_levels: list[bool] = Field(default_factory=lambda: [False, False, False],
                                         description="self-attention per level (one entry per channels entry)")
    with_encoder_nonlocal_attn: bool = True
    with_decoder_nonlocal_attn: bool = True
    use_convtranspose: bool | None = Field(None, description="MONAI: 2x2 transposed convs to upsample; null: false")
    include_fc: bool | None = Field(None, description="MONAI: output projection in attention blocks; null: true")
    use_combined_linear: bool | None = Field(None, description="MONAI: one qkv projection in attention; null: false")
    use_flash_attention: bool | None = Field(None, description="MONAI: fused attention kernel; null: false")
    final_activation: bool | None = Field(
        None, description="SiLU before the last conv (ndvq's earlier layout, not MONAI's); null: false")

    @model_validator(mode="after")
    def _check(self) -> LDMConfig:
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
        blocks = self.num_res_blocks if isinstance(self.num_res_blocks, list) else [self.num_res_blocks]
        if isinstance(self.num_res_blocks, list) and len(blocks) != len(self.channels):
            raise ValueError(f"num_res_blocks needs one entry per entry of channels ({len(self.channels)}) "
                             f"or a single number, got {len(blocks)}: {blocks}")
        if min(blocks, default=0) < 0:
            raise ValueError(f"num_res_blocks must be >= 0, got {self.num_res_blocks}")
        return self


class HierarchicalConfig(_Section):
    """``model.top``: the top level of a two-level VQ-VAE-2 (``model.kind=hierarchical``)."""

    downsample: list[int] = Field(default_factory=lambda: [2, 2])
    n_codes: int | None = Field(None, ge=2, description="defaults to model.n_codes")
    embedding_dim: int | None = Field(None, ge=1, description="defaults to model.embedding_dim")

    _check = field_validator("downsample")(lambda cls, v: _power_of_two_list(v, "model.top.downsample"))


class ModelConfig(_Section):
    """``model``: the autoencoder, a backbone x bottleneck product (see docs/design.md)."""

    kind: Literal["vqvae", "hierarchical", "klvae"] = Field(
        "vqvae", description="preset: vqvae (videogpt + vq), hierarchical (VQ-VAE-2), klvae (ldm + gaussian)")
    backbone: Literal["videogpt", "ldm"] | None = Field(None, description="encoder/decoder stack; null: from kind")
    bottleneck: Literal["vq", "residual", "grouped", "fsq", "lfq", "simvq", "gaussian"] | None = Field(
        None, description="quantizer kind or gaussian; null: from kind")
    n_dims: int = Field(2, ge=1, le=3)
    in_channels: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="input channels; auto: the train data's channel count (ndvq train resolves it and "
                            "records the number in config.yaml)")
    out_channels: int | None = Field(None, ge=1, description="defaults to in_channels")
    embedding_dim: int | None = Field(None, ge=1, description="latent channels; null: 64 for quantizers, 4 for gaussian")
    n_codes: int = Field(512, ge=2, description="codes per codebook (quantizer bottlenecks)")
    videogpt: VideoGPTConfig = Field(default_factory=VideoGPTConfig)
    ldm: LDMConfig = Field(default_factory=LDMConfig)
    quantizer: QuantizerConfig = Field(default_factory=QuantizerConfig)
    top: HierarchicalConfig = Field(default_factory=HierarchicalConfig)

    @model_validator(mode="after")
    def _resolve_and_check(self) -> ModelConfig:
        # fill the None presets through __dict__: assigning would re-run this validator (validate_assignment)
        backbone, bottleneck = PRESETS[self.kind]
        self.__dict__["backbone"] = self.backbone or backbone
        self.__dict__["bottleneck"] = self.bottleneck or bottleneck
        if self.embedding_dim is None:
            self.__dict__["embedding_dim"] = 4 if self.bottleneck == "gaussian" else 64
        ds = self.videogpt.downsample
        if self.backbone == "videogpt" and len(ds) not in (1, self.n_dims):
            raise ValueError(f"model.videogpt.downsample needs 1 or n_dims={self.n_dims} entries, got {len(ds)}: {ds}")
        if self.kind == "hierarchical" and (self.backbone != "videogpt" or self.bottleneck == "gaussian"):
            raise ValueError(f"model.kind=hierarchical needs model.backbone=videogpt and a quantizer bottleneck, "
                             f"got backbone={self.backbone!r}, bottleneck={self.bottleneck!r}")
        return self


class DataConfig(_Section):
    """``data``: which dataset and how it is read. Options apply to the kinds named in their description."""

    kind: Literal["samples", "image", "video", "audio", "series", "volume"] = "samples"
    root: Path | None = Field(None, description="data folder, or one file (all kinds but samples)")
    val_dir: Path | None = Field(None, description="separate validation folder; overrides train_split")
    train_split: float = Field(0.9, gt=0, le=1, description="fraction of files for training when no test/ folder or val_dir")
    split_seed: int = 0
    subfolders: list[str] | None = Field(None, description="only these subfolders of root (image, volume)")
    extensions: list[str] | None = Field(None, description="file extensions to read; default depends on kind")
    channels: int | None = Field(None, ge=1, description="convert to this many channels (image: 1 gray, 3 RGB, 4 RGBA); "
                                  "null: the train split's, recorded in the run's config")
    resolution: list[int] | None = Field(None, description="resize/crop target (image, video)")
    patch_size: list[int] | None = Field(None, description="random crop/patch size for training; centre patch for val (image, volume)")
    patches_per_item: int = Field(1, ge=1, description="random patches cut from each file per epoch of the train split (image, volume with patch_size)")
    crop: Literal["center", "random", "resize", "none"] = "center"
    augment: bool = False
    sequence_length: int = Field(16, ge=1, description="frames per clip (video)")
    frame_stride: int = Field(1, ge=1, description="take every n-th frame (video)")
    clip_stride: int | None = Field(None, ge=1, description="frames between clip starts (video); default sequence_length*frame_stride")
    sample_rate: int | None = Field(None, ge=1, description="resample to this rate (audio; stated in the start "
                                                             "summary); null: the folder's most common rate, recorded in the run's config")
    mono: bool = True
    segment_length: int = Field(16384, ge=1, description="samples per window (audio) / time steps per window (series)")
    hop_length: int | None = Field(None, ge=1, description="hop between windows (audio, series); default segment_length")
    normalize: Literal["peak", "rms", "none"] = "peak"
    standardize: bool = Field(True, description="per-channel z-score with train-split statistics (series)")
    intensity: Literal["percentile", "ct", "zscore", "none"] = "percentile"
    percentiles: tuple[float, float] = (0.5, 99.5)
    ct_window: tuple[float, float] = (-1000.0, 1000.0)
    sample_patches: int = Field(2048, ge=1, description="patches cut from the built-in sample images (samples)")
    shards: str | list[str] | None = Field(
        None, description="WebDataset tar shards to stream instead of data.root (a brace pattern, a glob or a list, "
                          "whose .json entries are manifests; local paths or URLs such as pipe: / http:), e.g. "
                          "written by `ndvq shard`; docs/shards.md")
    val_shards: str | list[str] | None = Field(
        None, description="validation shards; default: the val/ shards `ndvq shard` wrote beside data.shards, else none")
    shuffle_buffer: int = Field(1000, ge=1, description="items mixed in each shard reader's shuffle buffer (data.shards)")


class LossConfig(_Section):
    """``loss``: every loss weight (``ndvq.objectives.Objective``); may change on ``--resume``."""

    recon_loss: Literal["mse", "l1"] = "mse"
    recon_weight: float = Field(1.0, gt=0, description="weight of the reconstruction loss")
    kl_weight: float = Field(1e-6, ge=0, description="gaussian bottleneck only")
    perceptual_weight: float = Field(0.0, ge=0)
    perceptual_weights: Path | None = Field(None, description="local file with the perceptual network's weights")
    perceptual_slices: int = Field(8, ge=1, description="3D: slices per axis fed to the 2D perceptual network")
    perceptual_network: Literal["auto", "lpips-vgg", "lpips-alex", "uniform"] = Field(
        "auto", description="LPIPS calibrated layers (auto: of the trunk found) or uniform channel weights")
    perceptual_fake_3d_ratio: float | None = Field(
        None, gt=0, le=1, description="3D: MONAI's 2.5D loss on this random fraction of each axis' slices")
    adversarial_weight: float = Field(0.0, ge=0)
    adversarial_loss: Literal["hinge", "lsgan", "bce"] = "lsgan"
    adversarial_warmup_epochs: int = Field(0, ge=0, description="epochs before the discriminator switches on")
    adversarial_start_step: int = Field(0, ge=0, description="steps before the discriminator switches on (VQGAN disc_start)")
    adversarial_adaptive_weight: bool = Field(
        False, description="VQGAN's adaptive generator weight ||grad rec|| / (||grad gan|| + 1e-4) at the last layer")
    adversarial_max_weight: float = Field(1e4, gt=0, description="clamp of the adaptive weight")
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
    lr_schedule: Literal["constant", "cosine", "cyclic"] = Field(
        "constant", description="constant (after warmup_steps; with the default weight_ema the delivered weights "
        "are their moving average) or cosine: decay to min_lr_ratio at the run's last step, which costs quality on "
        "a short run of a large codebook (docs/benchmarks-quality.md)")
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine/cyclic floor as a fraction of learning_rate")
    cycle_steps: int = Field(1000, ge=1, description="period of the cyclic schedule")
    grad_clip: float | None = Field(1.0, gt=0)
    weight_ema: float | None = Field(
        0.99, gt=0, lt=1, description="keep a moving average of the weights with this decay (0.99: ~100 steps; null: "
        "off); validation, samples and every checkpoint's model (eval, encode, export, compress) use the average, "
        "which removes the step-to-step jitter of the last weights (docs/training.md); off by default under "
        "strategy=fsdp")
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
    compile: bool = Field(False, description="torch.compile the model (inductor; the first step of each session compiles: minutes on CPU, see docs/benchmarks.md)")
    activation_checkpointing: bool = Field(
        False, description="recompute backbone activations in backward: less memory, ~1 more forward (MONAI use_checkpoint)")
    doctor_warnings: bool = True
    loggers: list[Literal["jsonl", "tensorboard", "wandb", "mlflow"]] = Field(default_factory=lambda: ["jsonl", "tensorboard"], description="experiment trackers (rank 0): jsonl (metrics.jsonl, always on), tensorboard, wandb (pip install \"ndvq[wandb]\"), mlflow (pip install \"ndvq[mlflow]\"); see docs/trackers.md")

    @field_validator("loggers")
    @classmethod
    def _jsonl_always(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(["jsonl", *v]))  # metrics.jsonl is what the doctor and report read

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.max_steps is None and self.num_epochs is None:
            raise ValueError("set train.max_steps or train.num_epochs (both are None)")
        if self.weight_ema is not None and self.strategy == "fsdp":  # sharded parameters: no whole copy to average
            if "weight_ema" not in self.model_fields_set:  # the default, not the user's choice: off
                self.__dict__["weight_ema"] = None  # through __dict__: assigning would re-run this validator
                return self
            raise ValueError(f"train.weight_ema={self.weight_ema} needs whole parameters on every device; it does not "
                             "work with train.strategy=fsdp (use ddp, or set train.weight_ema=null)")
        return self


class RunConfig(_Section):
    """``run``: where outputs go."""

    name: str | None = Field(None, description="run folder name; default: <model.kind>-<data.kind>-<timestamp>")
    root: Path = Path("runs")
    resume: Path | None = Field(None, description="run directory or checkpoint to continue (like --resume; set by the medical resume_ckpt + checkpoint_dir)")
    init_from: Path | None = Field(None, description="start from these weights only (like --init-from): a save_pretrained folder or a MONAI AutoencoderKL checkpoint; set by the medical resume_ckpt + checkpoint_dir for such files")


class Config(_Section):
    """The whole configuration."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    run: RunConfig = Field(default_factory=RunConfig)


# ---------------------------------------------------------------------------------------------
# Introspection: keys, constraints, the docs table
# ---------------------------------------------------------------------------------------------

def _section_type(annotation) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def all_keys(model: type[BaseModel] | None = None, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, e.g. ``["model.kind", ..., "model.quantizer.beta", ...]``."""
    keys = []
    for name, field in (model or Config).model_fields.items():
        sub = _section_type(field.annotation)
        keys += all_keys(sub, f"{prefix}{name}.") if sub else [prefix + name]
    return keys


def field_at(path: list[str] | tuple) -> tuple[type[BaseModel] | None, object]:
    """``(section class or None, FieldInfo or None)`` of the dotted ``path`` (a section path gives its class)."""
    model, field = Config, None
    for part in path:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None, None
        field = model.model_fields[part]
        model = _section_type(field.annotation)
    return model, field


def allowed_text(loc: tuple) -> str:
    """The constraints of the field at ``loc`` as text, e.g. ``"allowed: 0 < value <= 1 (float)"``."""
    field = None
    model = Config
    for part in loc:  # a loc may run past the field (list items): stop at the last field found
        if not isinstance(part, str) or model is None or part not in model.model_fields:
            break
        field = model.model_fields[part]
        model = _section_type(field.annotation)
    if field is None:
        return ""
    lo = hi = ""
    for m in field.metadata:
        for attr, sym, side in (("ge", "<=", "lo"), ("gt", "<", "lo"), ("le", "<=", "hi"), ("lt", "<", "hi")):
            v = getattr(m, attr, None)
            if v is not None and side == "lo":
                lo = f"{v} {sym} "
            elif v is not None:
                hi = f" {sym} {v}"
    ann = field.annotation
    if "Literal" in str(ann):
        return ""  # pydantic's message already lists the choices
    ann = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
    rng = f"{lo}value{hi}" if (lo or hi) else ""
    return f"allowed: {rng} ({ann})" if rng else f"expected {ann}"


def _choices(annotation) -> tuple[list, bool] | None:
    """``(choices, optional)`` of a ``Literal[...]`` or ``Literal[...] | None`` annotation, else None."""
    if get_origin(annotation) is Literal:
        return list(get_args(annotation)), False
    members = get_args(annotation)
    literals = [m for m in members if get_origin(m) is Literal]
    if literals and len(members) == 2 and type(None) in members:
        return list(get_args(literals[0])), True
    return None


def _markdown_row(key: str, field) -> str:
    default = field.get_default(call_default_factory=True)
    default = default if not isinstance(default, Path) else str(default)
    typ = str(field.annotation).replace("typing.", "").replace("pathlib.", "").replace("<class '", "").replace("'>", "")
    allowed = allowed_text(tuple(key.split("."))).removeprefix("allowed: ").removeprefix("expected ")
    choices = _choices(field.annotation)
    if choices:
        allowed = ", ".join(repr(c) for c in choices[0])
        typ = "choice or None" if choices[1] else "choice"
    elif "value" not in allowed:
        allowed = ""
    desc = (field.description or "").replace("|", "\\|")
    return (f"| `{key}` | {typ.replace('|', 'or')} | `{default}` | "
            f"{allowed.split(' (')[0].replace('|', 'or')} | {desc} |")


def schema_markdown() -> str:
    """The key reference of docs/training.md: one Markdown table row per key (type, default, range, meaning)."""
    rows = ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
    for key in all_keys():
        rows.append(_markdown_row(key, field_at(key.split("."))[1]))
    return "\n".join(rows)
