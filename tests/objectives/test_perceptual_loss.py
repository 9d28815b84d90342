"""LPIPS-style perceptual loss: local weights only, 2D and slice-wise 3D, the missing-weights error."""

from __future__ import annotations

import pytest
import torch

from ndvq.errors import ConfigError
from ndvq.objectives import Objective, PerceptualLoss, PerceptualWeightsNotFoundError
from ndvq.objectives.perceptual import (
    ENV_VAR,
    HUB_FILENAMES,
    find_perceptual_weights,
    load_feature_net,
)


@pytest.mark.parametrize("n_dims,shape", [(2, (2, 1, 32, 32)), (3, (1, 1, 16, 20, 24))])
@pytest.mark.parametrize("channels", [1, 2, 3])
def test_perceptual_loss_2d_3d(tiny_vgg, n_dims, shape, channels):
    shape = (shape[0], channels, *shape[2:])
    loss_fn = PerceptualLoss(n_dims=n_dims, weights=tiny_vgg, slices=4)
    x = torch.rand(shape) * 2 - 1
    y = (x + 0.3 * torch.randn(shape)).clamp(-1, 1).requires_grad_(True)
    same = loss_fn(x, x.clone())
    diff = loss_fn(y, x)
    assert same.ndim == 0 and same.item() == pytest.approx(0.0, abs=1e-6)
    assert diff.item() > 1e-4
    diff.backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss_fn.net.parameters())  # frozen network


def test_perceptual_3d_uses_every_axis(tiny_vgg):
    """A change confined to one slice position along one axis is seen (the slices along the other
    two axes cross it)."""
    loss_fn = PerceptualLoss(n_dims=3, weights=tiny_vgg, slices=2)
    x = torch.zeros(1, 1, 16, 16, 16)
    y = x.clone()
    y[:, :, 7] = 1.0  # one plane along D; slices along D (at 5, 10) miss it
    assert loss_fn(y, x).item() > 0


def test_slice_count_is_clipped(tiny_vgg):
    loss_fn = PerceptualLoss(n_dims=3, weights=tiny_vgg, slices=100)
    assert loss_fn._slice_index(16, torch.device("cpu")).tolist() == list(range(16))
    assert len(PerceptualLoss(3, tiny_vgg, slices=3)._slice_index(16, torch.device("cpu"))) == 3


def test_too_small_and_bad_dims(tiny_vgg):
    loss_fn = PerceptualLoss(2, tiny_vgg)
    with pytest.raises(ValueError, match="at least 16x16"):
        loss_fn(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="perceptual_weight=0 for 1D"):
        PerceptualLoss(1, tiny_vgg)
    with pytest.raises(ValueError, match="same shape"):
        loss_fn(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 17))


def test_alexnet_layout_and_torchvision_keys(make_weights):
    path = make_weights("alexnet")
    net = load_feature_net(path)
    assert net.arch == "alexnet"
    loss_fn = PerceptualLoss(2, path)
    x = torch.rand(1, 3, 64, 64)
    assert loss_fn(x, x.flip(-1)).item() > 0


def test_bad_state_dict(tmp_path, isolated_weights_env):
    path = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not a VGG16 or AlexNet state dict"):
        load_feature_net(path)


def test_search_order(make_weights, isolated_weights_env, monkeypatch):
    hub = make_weights(path=isolated_weights_env / "hub" / "checkpoints" / HUB_FILENAMES[0])
    assert find_perceptual_weights() == hub
    env = make_weights(name="env.pth")
    monkeypatch.setenv(ENV_VAR, str(env))
    assert find_perceptual_weights() == env
    explicit = make_weights(name="explicit.pth")
    assert find_perceptual_weights(explicit) == explicit


def test_missing_weights_error_lists_every_place(isolated_weights_env, monkeypatch, tmp_path):
    with pytest.raises(PerceptualWeightsNotFoundError) as e:
        Objective(perceptual_weight=1.0, n_dims=2, in_channels=1)
    msg = str(e.value)
    for name in HUB_FILENAMES:
        assert str(isolated_weights_env / "hub" / "checkpoints" / name) in msg
    assert ENV_VAR in msg and "loss.perceptual_weights" in msg and "loss.perceptual_weight=0" in msg
    # with the env var set to a missing file, that file is listed too
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nowhere.pth"))
    with pytest.raises(PerceptualWeightsNotFoundError, match="nowhere.pth"):
        find_perceptual_weights()
    # an explicit path that does not exist is an error of its own
    with pytest.raises(PerceptualWeightsNotFoundError, match="typo.pth"):
        Objective(perceptual_weight=1.0, perceptual_weights=tmp_path / "typo.pth", n_dims=2, in_channels=1)
    # perceptual_weight=0 never looks for weights
    assert Objective(perceptual_weight=0.0, n_dims=2, in_channels=1).perceptual is None


def test_missing_weights_error_is_a_config_error(isolated_weights_env):
    with pytest.raises(PerceptualWeightsNotFoundError) as e:
        Objective(n_dims=3, in_channels=1, perceptual_weight=0.5)
    assert isinstance(e.value, ConfigError) and isinstance(e.value, FileNotFoundError)
    assert "no weights for its network were found" in str(e.value)


def test_config_errors(tiny_vgg):
    with pytest.raises(ConfigError, match="perceptual_weight=0 for 1D"):
        Objective(n_dims=1, in_channels=1, perceptual_weight=1.0, perceptual_weights=tiny_vgg)
    with pytest.raises(ConfigError, match="perceptual_slices must be >= 1"):
        PerceptualLoss(3, tiny_vgg, slices=0)
    with pytest.raises(ConfigError, match="at least 16x16"):
        PerceptualLoss(2, tiny_vgg)(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
