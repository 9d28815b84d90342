"""Real signals for the export parity tests (photographs shipped with scikit-image) and the comparisons."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ndvq import nd

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def photographs() -> list[torch.Tensor]:
    """The photographs as ``[3, H, W]`` floats in [-1, 1]."""
    from skimage import data

    return [torch.from_numpy(getattr(data, n)()[..., :3].astype(np.float32) / 127.5 - 1).permute(2, 0, 1)
            for n in PHOTOS]


def real_inputs(n_dims: int) -> torch.Tensor:
    """Real data per dimensionality: 1D gray image rows ``[N, 1, 256]``, 2D RGB patches ``[N, 3, 48, 48]``,
    3D "videos" ``[N, 3, 8, 32, 32]`` (a 32x32 window panning 3 px per frame over a photograph)."""
    out = []
    for img in photographs():
        if n_dims == 1:
            gray = img.mean(0)  # [H, W]
            out.append(gray[::2, :256].unsqueeze(1))  # every other row: [H/2, 1, 256]
        elif n_dims == 2:
            p = img.unfold(1, 48, 48).unfold(2, 48, 48)  # [3, h, w, 48, 48]
            out.append(p.permute(1, 2, 0, 3, 4).reshape(-1, 3, 48, 48))
        else:
            clips = [torch.stack([img[:, y:y + 32, x + 3 * t:x + 3 * t + 32] for t in range(8)], dim=1)
                     for y in range(0, img.shape[1] - 32, 48) for x in range(0, img.shape[2] - 56, 64)]
            out.append(torch.stack(clips))  # [N, 3, 8, 32, 32]
    return torch.cat(out).contiguous()


@torch.no_grad()
def search_distances(model, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Squared distance, in a VQ quantizer's own search space, from each token of ``x`` to its code in
    ``codes`` (``[B, *L]``): two codes at (nearly) equal distance are a (near-)tie."""
    q = model.quantizer
    z = nd.channels_last(model.backbone.encode(x))  # [B, D, *L] -> [B, *L, D]
    u = q.project_in(z).reshape(-1, q.codebook_dim)  # [B, *L, D] -> [N, Dc]
    u = F.normalize(u, dim=-1) if q.cosine else u
    return (u - q.codebook()[codes.reshape(-1)]).pow(2).sum(-1)  # [N]


@torch.no_grad()
def second_best_gaps(model, x: torch.Tensor) -> torch.Tensor:
    """Distance from each token to its second-nearest code minus that to its nearest (the margin a
    numerical difference has to overcome to change a code)."""
    q = model.quantizer
    z = nd.channels_last(model.backbone.encode(x))
    u = q.project_in(z).reshape(-1, q.codebook_dim)
    u = F.normalize(u, dim=-1) if q.cosine else u
    d = torch.cdist(u, q.codebook()).pow(2)  # [N, K]
    two = d.topk(2, dim=1, largest=False).values
    return two[:, 1] - two[:, 0]


def fit_briefly(model, x: torch.Tensor, steps: int = 20, batch: int = 16) -> None:
    """A few Adam steps of reconstruction + quantizer loss on ``x`` (the first step k-means-initialises
    the codebook), so codes spread over real data as in a trained model. Leaves the model in eval mode."""
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(steps):
        b = x[torch.randint(len(x), (batch,), generator=g)]
        out = model(b)
        loss = F.mse_loss(out.reconstruction, b) + out.aux_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
