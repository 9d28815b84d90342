"""One run of the quality benchmark's protocol (benchmarks/quality.py) on another checkout of ndvq.

Used to replay a run of an older version (issue 18: the low runs were measured on commit 256f3f0) with
the benchmark's data, batch orders, optimiser and metrics. ``SRC`` is that checkout's ``src`` folder
(``git worktree add /tmp/old 256f3f0``); its ``ndvq.VQVAE`` is built with the benchmark's sizes and trained
on its own ``loss`` (older versions) or on MSE + ``aux_loss`` (this one).

Run: ``python -m benchmarks.quality_at_commit /tmp/old/src --seed 0 --order 1 --probes 19`` (prints one JSON line).
"""

from __future__ import annotations

import argparse
import json
import sys
import types


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", help="the other checkout's src folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--order", type=int, default=0)
    p.add_argument("--k", type=int, default=512)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--probes", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    sys.path.insert(0, args.src)  # that checkout's ndvq before this one's
    import torch

    torch.set_num_threads(args.threads)
    try:
        import ndvq.metrics  # noqa: F401
    except ImportError:  # older versions kept ssim in diagnostics
        from ndvq.diagnostics.metrics import ssim

        sys.modules["ndvq.metrics"] = types.SimpleNamespace(ssim=ssim)
    import benchmarks.quality as q

    def build(model: str, k: int, overrides: dict | None = None):
        from ndvq import VQVAE

        net = VQVAE(n_dims=2, in_channels=3, n_hiddens=q.ARCH["n_hiddens"], n_res_layers=q.ARCH["n_res_layers"],
                    downsample=(4, 4), embedding_dim=q.ARCH["embedding_dim"], n_codes=k, **(overrides or {}))
        net.validate_inputs = False

        def step_loss(x):
            out = net(x)
            if hasattr(out, "aux_loss"):
                return torch.nn.functional.mse_loss(out.reconstruction, x) + out.aux_loss
            return out.loss  # older versions: recon + quantizer loss

        return net, step_loss, q._closure("ndvq", net)

    q.build = build
    res = q.train_run("ndvq", args.k, args.seed, args.order, args.steps, probes=args.probes)
    res.pop("last_restart", None)
    print(json.dumps({"src": args.src, **res}))


if __name__ == "__main__":
    main()
