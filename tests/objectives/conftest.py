"""Fixtures for the objective tests: fake model outputs and a tiny randomly initialised
VGG16-layout weights file (never real weights)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

from ndvq.objectives import kl_divergence
from ndvq.objectives.perceptual import LAYOUTS

TINY_VGG_WIDTHS = [4, 4, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8]


def tiny_state_dict(arch: str = "vgg16", widths: list[int] | None = None) -> dict[str, torch.Tensor]:
    """A torchvision-named state dict (``features.<i>.weight/bias`` + a ``classifier`` entry) with small widths."""
    g = torch.Generator().manual_seed(0)
    layers = LAYOUTS[arch]["layers"]
    convs = [i for i, item in enumerate(layers) if item[0] == "conv"]
    widths = widths or ([4] * len(convs) if arch == "alexnet" else TINY_VGG_WIDTHS)
    sd, c_in = {}, 3
    for i, w in zip(convs, widths):
        k = layers[i][1]
        sd[f"features.{i}.weight"] = torch.randn(w, c_in, k, k, generator=g) * (2.0 / (c_in * k * k)) ** 0.5
        sd[f"features.{i}.bias"] = torch.zeros(w)
        c_in = w
    sd["classifier.0.weight"] = torch.zeros(2, 2)  # ignored, as in torchvision's checkpoint
    return sd


@pytest.fixture
def isolated_weights_env(tmp_path, monkeypatch):
    """No perceptual weights anywhere: empty TORCH_HOME, no $NDVQ_PERCEPTUAL_WEIGHTS."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv("NDVQ_PERCEPTUAL_WEIGHTS", raising=False)
    return home


@pytest.fixture
def tiny_vgg(tmp_path, isolated_weights_env):
    """Path of a tiny VGG16-layout weights file saved with torch.save."""
    path = tmp_path / "tiny_vgg16.pth"
    torch.save(tiny_state_dict("vgg16"), path)
    return path


@pytest.fixture
def make_weights(tmp_path, isolated_weights_env):
    """``make_weights(arch="vgg16", name="w.pth", widths=None) -> Path`` writes a tiny state dict."""

    def make(arch: str = "vgg16", name: str = "w.pth", widths: list[int] | None = None, path=None):
        path = path or tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(tiny_state_dict(arch, widths), path)
        return path

    return make


@dataclass
class FakeOutput:
    """The attributes :class:`ndvq.objectives.Objective` reads from a model output."""

    reconstruction: torch.Tensor
    aux_loss: torch.Tensor
    kl_loss: torch.Tensor | None = None
    model_scalars: dict[str, torch.Tensor] = field(default_factory=dict)

    def scalars(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self.model_scalars.items()}


def quantizer_like(x: torch.Tensor, beta: float = 0.25) -> FakeOutput:
    """A VQ-like output: a reconstruction with grad, ``aux_loss = beta * commitment`` and no KL."""
    recon = (x + 0.1 * torch.randn_like(x)).requires_grad_()
    commitment = torch.rand((), requires_grad=True)
    return FakeOutput(recon, beta * commitment, None,
                      {"commitment_loss": commitment, "perplexity": torch.tensor(7.0),
                       "usage": torch.tensor(0.5)})


def gaussian_like(x: torch.Tensor) -> FakeOutput:
    """A KL-VAE-like output: a zero ``aux_loss`` and the unweighted KL of a random posterior."""
    recon = (x + 0.1 * torch.randn_like(x)).requires_grad_()
    mean = torch.randn(x.shape[0], 4, *x.shape[2:], requires_grad=True)
    std = torch.rand(mean.shape) + 0.5
    kl = kl_divergence(mean, std)
    return FakeOutput(recon, recon.new_zeros(()), kl, {"kl_loss": kl, "latent_std": std.mean()})


@pytest.fixture
def fake_outputs():
    """``{"quantizer": quantizer_like, "gaussian": gaussian_like}``: ``make(x) -> FakeOutput``."""
    return {"quantizer": quantizer_like, "gaussian": gaussian_like}


@pytest.fixture
def generator_terms():
    """``generator_terms(objective, x, recon, epoch) -> (total - recon_weight * recon_loss, scalars)``
    for an output without aux/KL terms: what ``AutoencoderLoss.generator_loss`` returned."""

    def terms(objective, x: torch.Tensor, recon: torch.Tensor, epoch: int):
        res = objective(x, FakeOutput(recon, recon.new_zeros(())), epoch)
        return res.loss - objective.recon_weight * res.scalars["recon_loss"], res.scalars

    return terms
