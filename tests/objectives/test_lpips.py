"""LPIPS with its calibrated linear layers: agreement with the lpips package (when importable with a local
VGG16 trunk), the linear-layer application on a random trunk (no trunk file needed), MONAI's 2.5D use for 3D."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ndvq.errors import ConfigError
from ndvq.objectives import PerceptualLoss
from ndvq.objectives.perceptual import (
    LAYOUTS,
    FeatureNet,
    PerceptualWeightsNotFoundError,
    find_perceptual_weights,
    lpips_linear_weights,
)

ALEX_WIDTHS = [64, 192, 384, 256, 256]  # torchvision AlexNet: the widths LPIPS's alex layers fit


@pytest.fixture
def random_alexnet(tmp_path, isolated_weights_env):
    """A standard-width AlexNet trunk with random weights (torchvision key names), about 10 MB."""
    torch.manual_seed(0)
    net = FeatureNet("alexnet", ALEX_WIDTHS)
    path = tmp_path / "alexnet-random.pth"
    torch.save({f"features.{k}": v for k, v in net.features.state_dict().items()}, path)
    return path


def test_shipped_weights_are_lpips_v01_layers():
    for arch in ("vgg16", "alexnet"):
        lins = lpips_linear_weights(arch)
        assert len(lins) == len(LAYOUTS[arch]["taps"])
        assert all(w.ndim == 1 and (w >= 0).all() and w.sum() > 0 for w in lins)  # calibrated: non-negative
    assert [len(w) for w in lpips_linear_weights("vgg16")] == [64, 128, 256, 512, 512]
    assert [len(w) for w in lpips_linear_weights("alexnet")] == ALEX_WIDTHS


def _lpips_by_hand(net: FeatureNet, lins: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The lpips package's forward, written out: scaling layer, normalise, squared diff, 1x1 conv, spatial mean."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    fx, fy = net((x - shift) / scale), net((y - shift) / scale)
    total = 0
    for a, b, w in zip(fx, fy, lins):
        a = a / (torch.sqrt(torch.sum(a ** 2, dim=1, keepdim=True)) + 1e-10)
        b = b / (torch.sqrt(torch.sum(b ** 2, dim=1, keepdim=True)) + 1e-10)
        total = total + F.conv2d((a - b) ** 2, w.view(1, -1, 1, 1)).mean(dim=(2, 3), keepdim=True)
    return total.mean()  # MONAI: torch.mean over the [N, 1, 1, 1] distances


def test_linear_layers_applied_as_lpips_on_a_random_trunk(random_alexnet):
    loss = PerceptualLoss(n_dims=2, weights=random_alexnet, network="lpips-alex")
    assert loss.network == "lpips"
    x, y = torch.rand(3, 3, 72, 80) * 2 - 1, torch.rand(3, 3, 72, 80) * 2 - 1
    want = _lpips_by_hand(loss.net, lpips_linear_weights("alexnet"), x, y)
    torch.testing.assert_close(loss(x, y), want, rtol=1e-5, atol=1e-7)
    uniform = PerceptualLoss(n_dims=2, weights=random_alexnet, network="uniform")
    assert not torch.allclose(uniform(x, y), want)  # the calibrated weights matter
    auto = PerceptualLoss(n_dims=2, weights=random_alexnet)
    assert auto.network == "lpips"
    g = torch.rand(2, 1, 64, 64) * 2 - 1, torch.rand(2, 1, 64, 64) * 2 - 1  # one channel: lpips broadcasts it
    torch.testing.assert_close(loss(*g), _lpips_by_hand(loss.net, lpips_linear_weights("alexnet"), *g),
                               rtol=1e-5, atol=1e-7)


def test_wrong_trunk_for_the_network_and_tiny_trunks(random_alexnet, tiny_vgg):
    with pytest.raises(ConfigError, match="needs a vgg16 trunk"):
        PerceptualLoss(n_dims=2, weights=random_alexnet, network="lpips-vgg")
    assert PerceptualLoss(n_dims=2, weights=tiny_vgg).network == "uniform"  # non-standard widths
    with pytest.raises(ConfigError, match="do not fit LPIPS"):
        PerceptualLoss(n_dims=2, weights=tiny_vgg, network="lpips-vgg")
    with pytest.raises(ConfigError, match="perceptual_network must be one of"):
        PerceptualLoss(n_dims=2, weights=tiny_vgg, network="squeeze")


def test_3d_fake_ratio_is_monais_2p5d(tiny_vgg):
    loss = PerceptualLoss(n_dims=3, weights=tiny_vgg, fake_3d_ratio=0.5)
    x, y = torch.rand(2, 1, 36, 40, 44) * 2 - 1, torch.rand(2, 1, 36, 40, 44) * 2 - 1
    torch.manual_seed(3)
    got = loss(x, y)
    torch.manual_seed(3)
    want = 0
    for axis in (2, 3, 4):  # monai.losses.PerceptualLoss._calculate_axis_loss
        rest = [a for a in (2, 3, 4) if a != axis]
        xs = x.permute(0, axis, 1, *rest).reshape(-1, 1, x.shape[rest[0]], x.shape[rest[1]])
        ys = y.permute(0, axis, 1, *rest).reshape(-1, 1, x.shape[rest[0]], x.shape[rest[1]])
        idx = torch.randperm(xs.shape[0])[: int(xs.shape[0] * 0.5)]
        want = want + loss._distance_2d(xs[idx], ys[idx]).mean()
    torch.testing.assert_close(got, want)


def test_checkpointed_trunk_gives_the_same_loss_and_grad(tiny_vgg):
    loss = PerceptualLoss(n_dims=2, weights=tiny_vgg)
    x, y = (torch.rand(2, 3, 40, 40) * 2 - 1).requires_grad_(), torch.rand(2, 3, 40, 40) * 2 - 1
    a = loss(x, y)
    (ga,) = torch.autograd.grad(a, x)
    loss.net.activation_checkpointing = True
    b = loss(x, y)
    (gb,) = torch.autograd.grad(b, x)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(ga, gb)


def _lpips_package_and_trunk():
    lpips = pytest.importorskip("lpips", reason="the lpips package is not importable (it needs torchvision)")
    try:
        trunk = find_perceptual_weights(None)
    except PerceptualWeightsNotFoundError:
        pytest.skip("no local VGG16 trunk (vgg16-397923af.pth in the torch hub cache or $NDVQ_PERCEPTUAL_WEIGHTS)")
    return lpips, trunk


def test_agrees_with_the_lpips_package():
    lpips, trunk = _lpips_package_and_trunk()
    ours = PerceptualLoss(n_dims=2, weights=trunk, network="lpips-vgg")
    theirs = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False).eval()  # calibrated lins, trunk from our file
    feats = {k: v for k, v in ours.net.features.state_dict().items()}
    sd = {}
    for name, _ in theirs.net.named_parameters():  # slice<k>.<torchvision index>.<weight|bias>
        _, idx, kind = name.split(".")
        sd[name] = feats[f"{idx}.{kind}"]
    theirs.net.load_state_dict(sd, strict=True)
    torch.manual_seed(0)
    x, y = torch.rand(4, 3, 64, 64) * 2 - 1, torch.rand(4, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(ours(x, y), theirs(x, y).mean(), rtol=1e-4, atol=1e-6)
