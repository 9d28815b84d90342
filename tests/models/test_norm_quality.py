"""The norm fix of issue 18, pinned by a short deterministic run on real photographs.

Group norm pools its statistics over the whole input, so a model trained on patches fails on whole
photographs (the old ``configs/samples.yaml`` and modality examples: 13.9-15.2 dB on the whole unseen
photograph in ``ndvq train -c configs/samples.yaml``, 3 seeds). Channel norm, the default, normalises each
position alone. The same tiny model, seed, batches and schedule with each norm; held-out PSNR on patches
of a photograph it never saw (chelsea) and on that whole photograph.
Measured when written (Intel Xeon; patches / whole, dB): this test, group 19.64 / 15.56, channel
25.16 / 25.63; the same run on seed 1 (patches of the uncut photograph): group 19.59 / 16.13, channel
23.46 / 24.02; batch norm 23.79 / 24.92 (seed 0) and 22.90 / 22.73 (seed 1).

Channel against batch norm is not pinned here: at this budget their order flips with the seed and the
step count (200 steps: batch ahead on both seeds; 300: channel ahead; 400: seed 1 even on the whole
photograph), so a short test of it could not be trusted. The quality benchmark reads it over 10 runs
(docs/benchmarks-quality.md).
"""

import math

import numpy as np
import pytest
import torch

import ndvq

pytestmark = pytest.mark.slow
skdata = pytest.importorskip("skimage.data")


def _image(name: str) -> torch.Tensor:
    """``[3, H, W]`` in [-1, 1]."""
    return torch.from_numpy(np.asarray(getattr(skdata, name)(), dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)


def _crops(images: list[torch.Tensor], g: torch.Generator, n: int, size: int = 32) -> torch.Tensor:
    """``[n, 3, size, size]`` crops at seeded positions of seeded images."""
    out = []
    for _ in range(n):
        im = images[int(torch.randint(len(images), (1,), generator=g))]
        y = int(torch.randint(im.shape[1] - size, (1,), generator=g))
        x = int(torch.randint(im.shape[2] - size, (1,), generator=g))
        out.append(im[:, y:y + size, x:x + size])
    return torch.stack(out)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10 * math.log10(float(((a - b) ** 2).mean()) / 4)  # range 2


@pytest.fixture(scope="module")
def held_out_psnr():
    """``{norm: (patch PSNR, whole-photograph PSNR)}`` after 300 steps (cosine 1e-3 -> 1e-4, batch 16)."""
    train = [_image(n) for n in ("astronaut", "coffee", "rocket")]
    test = _image("chelsea")[:, :296, :448]  # whole photograph, cut to a multiple of the downsampling
    patches = _crops([test], torch.Generator().manual_seed(99), 64)
    steps, out = 300, {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic on every machine's thread count
    try:
        for norm in ("group", "channel"):
            torch.manual_seed(0)
            net = ndvq.VQVAE(n_dims=2, in_channels=3, n_hiddens=32, n_res_layers=1, embedding_dim=16,
                             n_codes=128, downsample=[4, 4], norm=norm)
            opt = torch.optim.Adam(net.parameters(), lr=1e-3)
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: 0.1 + 0.45 * (1 + math.cos(math.pi * s / steps)))
            g = torch.Generator().manual_seed(0)
            net.train()
            for _ in range(steps):
                loss = net(_crops(train, g, 16)).loss
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
            net.eval()
            with torch.no_grad():
                out[norm] = (_psnr(net(patches).reconstruction, patches),
                             _psnr(net(test[None]).reconstruction, test[None]))
    finally:
        torch.set_num_threads(threads)
    return out


def test_group_norm_trained_on_patches_fails_on_the_whole_photograph_and_channel_norm_does_not(held_out_psnr):
    (gp, gw), (cp, cw) = held_out_psnr["group"], held_out_psnr["channel"]
    assert cw >= cp - 1.0, f"channel norm: whole {cw:.2f} dB against patches {cp:.2f} dB"
    assert gw <= gp - 3.0, f"group norm: whole {gw:.2f} dB against patches {gp:.2f} dB"
    assert gw <= cw - 5.0, f"group norm: whole {gw:.2f} dB, channel norm {cw:.2f} dB"
