"""LPIPS perceptual loss (calibrated linear layers) on a 2D feature network loaded from a local file only.

The feature network is VGG16's or AlexNet's convolutional trunk written in plain ``torch.nn``
with torchvision's layer indices, so torchvision's ImageNet checkpoints load as they are (no
torchvision import, no download). Channel widths are read from the file, so any state dict with
the same layout works (the tests use a tiny randomly initialised one).

Where weights are looked for, in order (the first that exists is used):

1. the ``weights`` argument (``loss.perceptual_weights`` in the config);
2. the ``NDVQ_PERCEPTUAL_WEIGHTS`` environment variable;
3. torch's hub cache, ``$TORCH_HOME/hub/checkpoints/`` (default ``~/.cache/torch/hub/checkpoints/``):
   ``vgg16-397923af.pth`` then ``alexnet-owt-7be5be79.pth`` / ``alexnet-owt-4df8aa71.pth``.

The loss for images in ``[-1, 1]`` is LPIPS (Zhang et al. 2018; the ``lpips`` package, which MONAI,
taming-transformers and latent diffusion use): both images go through the network; at each tapped
ReLU the features are normalised to unit length over channels, their squared difference is
weighted per channel by LPIPS's calibrated linear layer (``network="lpips-vgg"``/``"lpips-alex"``;
``"uniform"``: every weight 1, ndvq's earlier loss) and summed over channels, then averaged over
positions; the taps are summed and the result averaged over the batch. The calibrated weights
(v0.1, a few KB) ship with ndvq in ``ndvq/objectives/lpips_weights/`` with the ``lpips`` package's
BSD-2-Clause licence; nothing is downloaded. 1D data is not supported; 3D volumes use the 2D
network on slices along each of the three axes: ``slices`` evenly spaced ones (distances averaged
over the axes), or, with ``fake_3d_ratio``, MONAI's 2.5D loss (that fraction of all slices of each
axis, drawn at random, distances summed over the axes).

Example:
    >>> loss_fn = PerceptualLoss(n_dims=2, weights="vgg16.pth")          # doctest: +SKIP
    >>> loss_fn(recon, target)                                           # doctest: +SKIP
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ndvq.errors import ConfigError

__all__ = [
    "PerceptualLoss",
    "PerceptualWeightsNotFoundError",
    "FeatureNet",
    "find_perceptual_weights",
    "perceptual_weight_candidates",
    "load_feature_net",
    "LAYOUTS",
    "ENV_VAR",
    "HUB_FILENAMES",
    "PERCEPTUAL_NETWORKS",
    "lpips_linear_weights",
]

#: ``network`` values: ``auto`` = the calibrated LPIPS layers of whichever trunk is found
PERCEPTUAL_NETWORKS = ("auto", "lpips-vgg", "lpips-alex", "uniform")
_LPIPS_FILES = {"vgg16": "vgg.safetensors", "alexnet": "alex.safetensors"}

ENV_VAR = "NDVQ_PERCEPTUAL_WEIGHTS"
HUB_FILENAMES = ("vgg16-397923af.pth", "alexnet-owt-7be5be79.pth", "alexnet-owt-4df8aa71.pth")

# torchvision ``features`` layouts: ("conv", kernel, stride, padding) | ("relu",) | ("pool", kernel, stride)
_C3 = ("conv", 3, 1, 1)
_R, _P = ("relu",), ("pool", 2, 2)
LAYOUTS: dict[str, dict] = {
    "vgg16": {
        "layers": [_C3, _R, _C3, _R, _P, _C3, _R, _C3, _R, _P, _C3, _R, _C3, _R, _C3, _R, _P,
                   _C3, _R, _C3, _R, _C3, _R, _P, _C3, _R, _C3, _R, _C3, _R],
        "taps": (3, 8, 15, 22, 29),  # relu1_2 relu2_2 relu3_3 relu4_3 relu5_3
    },
    "alexnet": {
        "layers": [("conv", 11, 4, 2), _R, ("pool", 3, 2), ("conv", 5, 1, 2), _R, ("pool", 3, 2),
                   _C3, _R, _C3, _R, _C3, _R],
        "taps": (1, 4, 7, 9, 11),
    },
}
# LPIPS input scaling for images in [-1, 1]
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class PerceptualWeightsNotFoundError(ConfigError, FileNotFoundError):
    """No local weights for the perceptual network; the message lists every place looked.

    A :class:`~ndvq.errors.ConfigError` (a user error) and a :class:`FileNotFoundError`.
    """


def perceptual_weight_candidates(weights: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """Every place weights are looked for, in order, as ``(source, path)`` pairs."""
    out: list[tuple[str, Path]] = []
    if weights is not None:
        out.append(("loss.perceptual_weights", Path(weights).expanduser()))
    env = os.environ.get(ENV_VAR)
    if env:
        out.append((f"${ENV_VAR}", Path(env).expanduser()))
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    out += [("torch hub cache", hub / name) for name in HUB_FILENAMES]
    return out


def find_perceptual_weights(weights: str | os.PathLike | None = None) -> Path:
    """The weights file to use, or :class:`PerceptualWeightsNotFoundError` naming every place looked.

    An explicitly given ``weights`` path that does not exist is an error even if another place has
    weights (a typo should not silently switch networks).
    """
    candidates = perceptual_weight_candidates(weights)
    if weights is not None and not candidates[0][1].is_file():
        raise PerceptualWeightsNotFoundError(
            f"loss.perceptual_weights={str(weights)!r} does not exist (or is not a file). "
            f"Point it at a VGG16/AlexNet state dict, or set loss.perceptual_weight=0."
        )
    for _, path in candidates:
        if path.is_file():
            return path
    looked = "\n".join(f"  - {src}: {p}" for src, p in candidates)
    if not os.environ.get(ENV_VAR):
        looked += f"\n  - ${ENV_VAR}: (not set)"
    raise PerceptualWeightsNotFoundError(
        "perceptual loss is on (loss.perceptual_weight > 0) but no weights for its network were found "
        "(ndvq never downloads them). Looked in:\n"
        f"{looked}\n"
        "Provide them in one of these ways:\n"
        "  - copy torchvision's ImageNet VGG16 checkpoint vgg16-397923af.pth (or AlexNet "
        "alexnet-owt-7be5be79.pth) into the torch hub cache folder above, e.g. from a machine with "
        "internet: python -c \"import torch; torch.hub.load_state_dict_from_url("
        "'https://download.pytorch.org/models/vgg16-397923af.pth')\";\n"
        f"  - or set loss.perceptual_weights=/path/to/vgg16.pth (or ${ENV_VAR}=/path/to/vgg16.pth);\n"
        "  - or switch the perceptual loss off: loss.perceptual_weight=0 "
        "(medical config: \"perceptual_weight\": 0 in autoencoder_train)."
    )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ConfigError(f"{path}: expected a state dict, got {type(sd).__name__}")
    return sd


class FeatureNet(nn.Module):
    """A torchvision-layout ``features`` trunk (``vgg16`` or ``alexnet``) returning the tapped ReLUs.

    Args:
        arch: ``"vgg16"`` or ``"alexnet"``. Default ``"vgg16"``.
        widths: output channels of each conv, in order (torchvision: 64, 64, 128, ... for VGG16).
    """

    def __init__(self, arch: str, widths: list[int]):
        super().__init__()
        spec = LAYOUTS[arch]
        self.arch, self.taps = arch, spec["taps"]
        layers: list[nn.Module] = []
        c_in, convs = 3, iter(widths)
        for item in spec["layers"]:
            if item[0] == "conv":
                c_out = next(convs)
                layers.append(nn.Conv2d(c_in, c_out, item[1], stride=item[2], padding=item[3]))
                c_in = c_out
            elif item[0] == "relu":
                layers.append(nn.ReLU(inplace=False))
            else:
                layers.append(nn.MaxPool2d(item[1], item[2]))
        self.features = nn.Sequential(*layers)
        self.activation_checkpointing = False  # recompute the trunk's activations in backward

    def min_size(self) -> int:
        """Smallest square input for which every tap has at least one position."""
        for s in range(1, 1024):
            size, ok = s, True
            for layer in self.features:
                if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
                    k, st, p = (layer.kernel_size, layer.stride, layer.padding)
                    k, st, p = (v[0] if isinstance(v, tuple) else v for v in (k, st, p))
                    size = (size + 2 * p - k) // st + 1
                    if size < 1:
                        ok = False
                        break
            if ok:
                return s
        return 1024

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The tapped ReLU outputs; with ``activation_checkpointing`` (and grad) only they are kept."""
        feats, start = [], 0
        use = self.activation_checkpointing and torch.is_grad_enabled()
        for tap in self.taps:
            segment = self.features[start:tap + 1]
            x = checkpoint(segment, x, use_reentrant=False) if use else segment(x)
            feats.append(x)
            start = tap + 1
        return feats


def lpips_linear_weights(arch: str) -> list[torch.Tensor]:
    """LPIPS v0.1's calibrated per-channel weights for the taps of ``arch`` (``"vgg16"``/``"alexnet"``),
    read from ndvq's package data (copied from the ``lpips`` package, BSD-2-Clause; see its LICENSE)."""
    from safetensors.torch import load

    data = resources.files("ndvq.objectives").joinpath("lpips_weights", _LPIPS_FILES[arch]).read_bytes()
    sd = load(data)
    return [sd[f"lin{i}.weight"].reshape(-1) for i in range(len(LAYOUTS[arch]["taps"]))]  # [1, C, 1, 1] -> [C]


def load_feature_net(path: str | os.PathLike) -> FeatureNet:
    """Build a :class:`FeatureNet` from a torchvision-style state dict (``features.<i>.weight``).

    The architecture is recognised from the conv indices present; ``classifier.*`` keys are ignored.
    """
    path = Path(path)
    sd = _read_state_dict(path)
    feats = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
    for arch, spec in LAYOUTS.items():
        conv_idx = [i for i, item in enumerate(spec["layers"]) if item[0] == "conv"]
        if all(f"{i}.weight" in feats and f"{i}.bias" in feats for i in conv_idx):
            widths = [int(feats[f"{i}.weight"].shape[0]) for i in conv_idx]
            net = FeatureNet(arch, widths)
            wanted = {k: v for k, v in feats.items() if k.split(".")[0].isdigit() and int(k.split(".")[0]) in conv_idx}
            try:
                net.features.load_state_dict(wanted, strict=True)
            except RuntimeError as e:
                msg = f"{path}: weights do not fit the {arch} layout: {e}"
                raise ConfigError(msg) from None
            return net.eval().requires_grad_(False)
    raise ConfigError(
        f"{path}: not a VGG16 or AlexNet state dict with torchvision key names "
        f"(expected keys like 'features.0.weight', 'features.28.weight'); found keys "
        f"{sorted(sd)[:6]}{' ...' if len(sd) > 6 else ''}"
    )


def _resolve_network(network: str, arch: str, path: Path) -> str:
    """``network`` -> ``"lpips"`` or ``"uniform"``, checking that the trunk found fits it."""
    if network not in PERCEPTUAL_NETWORKS:
        raise ConfigError(f"perceptual_network must be one of {PERCEPTUAL_NETWORKS}, got {network!r}")
    wanted = {"lpips-vgg": "vgg16", "lpips-alex": "alexnet"}.get(network)
    if wanted is not None and wanted != arch:
        raise ConfigError(f"perceptual_network={network!r} needs a {wanted} trunk but {str(path)!r} is {arch}; "
                          f"point loss.perceptual_weights at a {wanted} file or use perceptual_network=auto")
    return "uniform" if network == "uniform" else "lpips"


class PerceptualLoss(nn.Module):
    """LPIPS perceptual distance for 2D images or 3D volumes (slice-wise), in ``[-1, 1]``.

    Args:
        n_dims: 2 (images) or 3 (volumes; slices along each axis). Default 2.
        weights: path to the trunk's weights; ``None`` searches ``$NDVQ_PERCEPTUAL_WEIGHTS`` then
            the torch hub cache (see the module docstring). Default None.
        slices: for 3D without ``fake_3d_ratio``, evenly spaced slices per axis (fewer when an axis
            is shorter). Default 8.
        network: ``"auto"`` (calibrated LPIPS layers of the trunk found, VGG16 first; uniform weights
            for a trunk of non-standard widths), ``"lpips-vgg"``,
            ``"lpips-alex"`` (that trunk required) or ``"uniform"`` (every channel weight 1). Default ``"auto"``.
        fake_3d_ratio: for 3D, MONAI's 2.5D loss: this fraction of all slices of each axis, drawn at
            random every call, distances summed over the three axes (MONAI's default is 0.5); None uses
            ``slices``. Default None.

    Inputs with 3 channels are used as RGB; any other channel count is scored channel by channel
    (each repeated to 3 channels) and averaged (one channel: the same as ``lpips``, which broadcasts it).

    Raises:
        PerceptualWeightsNotFoundError: no weights file was found.
        ConfigError: ``n_dims`` not 2 or 3, ``slices < 1``, a bad ``network`` or ``fake_3d_ratio``, a
            weights file of another layout; images smaller than the network needs (at call time).
    """

    def __init__(self, n_dims: int = 2, weights: str | os.PathLike | None = None, slices: int = 8,
                 network: str = "auto", fake_3d_ratio: float | None = None):
        super().__init__()
        if n_dims not in (2, 3):
            raise ConfigError(
                f"the perceptual loss works on 2D images and 3D volumes, got n_dims={n_dims}; "
                "set loss.perceptual_weight=0 for 1D data"
            )
        if slices < 1:
            raise ConfigError(f"perceptual_slices must be >= 1, got {slices}")
        if fake_3d_ratio is not None and not 0 < fake_3d_ratio <= 1:
            raise ConfigError(f"perceptual_fake_3d_ratio must be in (0, 1], got {fake_3d_ratio}")
        self.n_dims, self.slices, self.fake_3d_ratio = n_dims, slices, fake_3d_ratio
        self.weights_path = find_perceptual_weights(weights)
        self.net = load_feature_net(self.weights_path)
        self.network = _resolve_network(network, self.net.arch, self.weights_path)
        self._min = self.net.min_size()
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        widths = [self.net.features[t - 1].out_channels for t in self.net.taps]
        lins = lpips_linear_weights(self.net.arch) if self.network == "lpips" else [torch.ones(w) for w in widths]
        if network == "auto" and [len(w) for w in lins] != widths:  # a non-standard trunk: uniform weights
            self.network, lins = "uniform", [torch.ones(w) for w in widths]
        if [len(w) for w in lins] != widths:
            raise ConfigError(f"{self.weights_path}: trunk widths {widths} do not fit LPIPS's {self.net.arch} "
                              f"layers {[len(w) for w in lins]}; use perceptual_network=uniform")
        for i, w in enumerate(lins):
            self.register_buffer(f"lin{i}", w.float().view(1, -1, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.net.eval()  # frozen network: always in eval mode
        return self

    def _distance_2d(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` pairs -> ``[N']`` per-image distances (``N' = N`` for RGB, else ``N * C``)."""
        if min(x.shape[-2:]) < self._min:
            raise ConfigError(
                f"perceptual network {self.net.arch} needs images of at least {self._min}x{self._min}, "
                f"got {list(x.shape[-2:])}"
            )
        if x.shape[1] != 3:  # score each channel as a grayscale image: [N, C, H, W] -> [N*C, 3, H, W]
            x = x.reshape(-1, 1, *x.shape[-2:]).expand(-1, 3, -1, -1)
            y = y.reshape(-1, 1, *y.shape[-2:]).expand(-1, 3, -1, -1)
        fx = self.net((x.float() - self.shift) / self.scale)
        with torch.no_grad():  # the target needs no graph: half the trunk's stored activations
            fy = self.net((y.float() - self.shift) / self.scale)
        total = x.new_zeros(x.shape[0], dtype=torch.float32)
        for i, (a, b) in enumerate(zip(fx, fy)):
            a = a / (a.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)  # unit length over channels
            b = b / (b.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total = total + ((a - b).pow(2) * getattr(self, f"lin{i}")).sum(dim=1).mean(dim=(1, 2))
        return total

    def _slice_index(self, size: int, device: torch.device) -> torch.Tensor:
        n = min(self.slices, size)
        pos = torch.linspace(0, size, n + 2)[1:-1] if n < size else torch.arange(size, dtype=torch.float32)
        return pos.long().clamp(0, size - 1).unique().to(device)

    def _axis_slices(self, v: torch.Tensor, axis: int, idx: torch.Tensor | None) -> torch.Tensor:
        """``[B, C, D, H, W]`` -> slices along ``axis`` ``[B*n, C, S1, S2]`` (``idx`` of the slices, or all)."""
        if idx is not None:
            v = v.index_select(axis, idx)
        return v.movedim(axis, 1).flatten(0, 1)

    def _distance_3d(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = recon.new_zeros((), dtype=torch.float32)
        for axis in (2, 3, 4):
            if self.fake_3d_ratio is None:
                idx = self._slice_index(recon.shape[axis], recon.device)
                xs, ys = self._axis_slices(recon, axis, idx), self._axis_slices(target, axis, idx)
            else:  # MONAI: a random fraction of all B*D slices of this axis
                xs, ys = self._axis_slices(recon, axis, None), self._axis_slices(target, axis, None)
                keep = torch.randperm(xs.shape[0])[: max(1, int(xs.shape[0] * self.fake_3d_ratio))].to(xs.device)
                xs, ys = xs.index_select(0, keep), ys.index_select(0, keep)
            total = total + self._distance_2d(xs, ys).mean()
        return total if self.fake_3d_ratio is not None else total / 3

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Perceptual distance between ``recon`` and ``target`` ``[B, C, *S]`` (scalar)."""
        if recon.shape != target.shape or recon.ndim != self.n_dims + 2:
            raise ValueError(
                f"perceptual loss expects two [B, C, *S] tensors with {self.n_dims} spatial dims of the "
                f"same shape, got {list(recon.shape)} and {list(target.shape)}"
            )
        if self.n_dims == 2:
            return self._distance_2d(recon, target).mean()
        return self._distance_3d(recon, target)
