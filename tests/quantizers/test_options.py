"""Every quantizer option and kind: shapes, gradient flow, lookup consistency, state-dict round trip.

Parametrised over option x token shape (n_dims 1/2/3).
"""

import warnings

import pytest
import torch

from ndvq.errors import ConfigError
from ndvq.quantizers import build_quantizer

DIM, CODES = 8, 32
TOKEN_SHAPES = {1: (2, 24), 2: (2, 6, 6), 3: (2, 3, 4, 4)}  # [B, *latent] for n_dims 1/2/3

CASES = {
    "default": ("vq", {}),
    "gradient": ("vq", dict(update="gradient", codebook_lr=1e-3)),
    "random_init": ("vq", dict(init="random")),
    "kmeans_2_batches": ("vq", dict(kmeans_batches=2, kmeans_iters=3)),
    "restart_replay": ("vq", dict(restart="replay", replay_size=64, restart_interval=2)),
    "restart_none": ("vq", dict(restart="none")),
    "restart_uniform_absolute": ("vq", dict(restart_sampling="uniform", restart_threshold=1.0)),
    "restart_share": ("vq", dict(restart_share=0.9, restart_interval=2)),
    "ema_tokens_per_code": ("vq", dict(ema_tokens_per_code=4.0)),
    "ema_accumulate": ("vq", dict(ema_accumulate_steps=2)),
    "entropy": ("vq", dict(entropy_weight=0.1)),
    "cosine": ("vq", dict(cosine=True)),
    "codebook_dim": ("vq", dict(codebook_dim=4)),
    "rotation_trick": ("vq", dict(rotation_trick=True)),
    "sample_temperature": ("vq", dict(sample_temperature=0.5)),
    "grow": ("vq", dict(grow_to=48, grow_at_step=1)),
    "fsq": ("fsq", dict(fsq_levels=[5, 4, 3])),
    "lfq": ("lfq", {}),
    "simvq": ("simvq", {}),
    "residual": ("residual", dict(num_quantizers=3, quantizer_dropout=0.5, codebook_dim=4)),
    "residual_gradient": ("residual", dict(num_quantizers=2, update="gradient", init="random", cosine=False)),
    "grouped": ("grouped", dict(groups=2)),
    "grouped_cosine": ("grouped", dict(groups=4, cosine=True, restart="replay", replay_size=32)),
}


def _build(name):
    kind, opts = CASES[name]
    return build_quantizer(kind, DIM, CODES, **opts)


def _train_steps(q, n_dims, steps=3):
    q.train()
    for _ in range(steps):
        q(torch.randn(*TOKEN_SHAPES[n_dims], DIM))


@pytest.mark.parametrize("n_dims", [1, 2, 3])
@pytest.mark.parametrize("name", list(CASES))
def test_shapes_and_gradient_flow(name, n_dims):
    q = _build(name).train()
    z = torch.randn(*TOKEN_SHAPES[n_dims], DIM, requires_grad=True)
    out = q(z)
    lead = z.shape[:-1]
    assert out.quantized.shape == z.shape and out.quantized.dtype == z.dtype
    assert out.indices.shape == lead + q.index_suffix and out.indices.dtype == torch.long
    assert out.counts.shape == (q.n_codebooks, q.n_codes)
    assert torch.allclose(out.counts.sum(dim=1), torch.full((q.n_codebooks,), float(lead.numel())))
    assert 0 < float(out.usage) <= 1 and 1 <= float(out.perplexity) <= q.n_codes
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    (out.loss + (out.quantized * torch.randn_like(out.quantized)).sum()).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0, "no gradient reached the input"
    for p in q.codebook_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, "gradient-updated codebook got no gradient"


@pytest.mark.parametrize("n_dims", [1, 2, 3])
@pytest.mark.parametrize("name", list(CASES))
def test_lookup_inverts_indices(name, n_dims):
    q = _build(name)
    _train_steps(q, n_dims)
    q.eval()
    z = torch.randn(*TOKEN_SHAPES[n_dims], DIM)
    out = q(z)
    torch.testing.assert_close(q.lookup(out.indices), out.quantized, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(CASES))
def test_state_dict_round_trip_does_not_reinit(name):
    torch.manual_seed(3)
    q = _build(name)
    _train_steps(q, 2)
    q2 = _build(name)
    q2.load_state_dict(q.state_dict())
    z = torch.randn(*TOKEN_SHAPES[2], DIM)
    q.eval(), q2.eval()
    a, b = q(z), q2(z)
    assert torch.equal(a.indices, b.indices)
    torch.testing.assert_close(a.quantized, b.quantized)
    # one more training step from identical RNG state: identical state afterwards (a re-init or a
    # lost buffer would make them differ)
    q.train(), q2.train()
    torch.manual_seed(7)
    q(z)
    torch.manual_seed(7)
    q2(z)
    sa, sb = q.state_dict(), q2.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], msg=f"buffer {k} differs after resume")


def test_build_accepts_every_config_field_and_rejects_unknown():
    from ndvq.config import QuantizerConfig

    fields = QuantizerConfig().model_dump()
    for kind in ("vq", "fsq", "lfq", "simvq", "residual", "grouped"):
        opts = {k: v for k, v in fields.items() if k != "kind"}
        q = build_quantizer(kind, 16, 64, **opts)
        assert q.dim == 16
    with pytest.raises(TypeError, match="unknown options"):
        build_quantizer("vq", 8, 16, not_an_option=1)
    with pytest.raises(ValueError, match="kind must be one of"):
        build_quantizer("nope", 8, 16)


@pytest.mark.parametrize(
    "kind, opts, match",
    [
        ("vq", dict(update="sgd"), "update must be one of"),
        ("vq", dict(grow_to=8), "grow_to must exceed"),
        ("vq", dict(restart_share=1.5), "restart_share must be in"),
        ("vq", dict(restart_sampling="random"), "restart_sampling must be one of"),
        ("vq", dict(ema_tokens_per_code=-1), "ema_tokens_per_code >= 0"),
        ("lfq", {}, "power of two"),
        ("grouped", dict(groups=3), "divisible by groups"),
        ("fsq", dict(fsq_levels=[1, 4]), "levels"),
    ],
)
def test_bad_options_raise_clear_errors(kind, opts, match):
    with pytest.raises(ValueError, match=match):
        build_quantizer(kind, 8, 24, **opts)


@pytest.mark.parametrize("name", ["default", "fsq", "residual"])
def test_bad_input_raises(name):
    q = _build(name)
    with pytest.raises(ValueError, match=rf"tokens \[\.\.\., {DIM}\]"):
        q(torch.randn(4, DIM + 1))
    with pytest.raises(TypeError, match="floating-point"):
        q(torch.ones(4, DIM, dtype=torch.long))


def test_autocast_bf16_search_in_fp32():
    q = build_quantizer("vq", DIM, CODES).train()
    z = torch.randn(64, DIM)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(z.bfloat16())
    assert out.quantized.dtype == torch.bfloat16
    q.eval()
    ref = q(z.bfloat16().float())
    assert torch.equal(out.indices, ref.indices) or (out.indices != ref.indices).float().mean() < 0.05


@pytest.mark.parametrize("kind, opts, sizes", [
    ("vq", {}, (24,)),
    ("vq", dict(grow_to=48), (48,)),
    ("fsq", dict(fsq_levels=[5, 4, 3]), (60,)),
    ("lfq", {}, (512,)),
    ("simvq", {}, (24,)),
    ("residual", dict(num_quantizers=3, cosine=False), (24, 24, 24)),
    ("grouped", dict(groups=4), (24, 24, 24, 24)),
])
def test_codebook_sizes_are_the_quantizers_own(kind, opts, sizes):
    """codebook_sizes: codes per index column (LFQ: 2**bits = n_codes, not 2**len(levels))."""
    q = build_quantizer(kind, DIM, 512 if kind == "lfq" else 24, **opts)
    assert q.codebook_sizes == sizes and len(sizes) == q.n_codebooks
    out = q.eval()(torch.randn(2, 5, DIM))
    assert out.counts.shape == (len(sizes), max(sizes))
    assert int(out.indices.max()) < max(sizes)


def test_old_fsq_option_name_warns_and_still_works():
    with pytest.warns(DeprecationWarning, match="'levels' is deprecated; use 'fsq_levels'"):
        q = build_quantizer("fsq", DIM, 24, levels=[4, 4])
    assert q.codebook_sizes == (16,)
    with pytest.raises(TypeError, match="both 'levels' and its new name 'fsq_levels'"):
        build_quantizer("fsq", DIM, 24, levels=[4, 4], fsq_levels=[4, 4])


def test_residual_levels_refine_and_unit_length_levels_are_refused():
    """Each residual level must shrink the error; a cosine lookup in the tokens' own dimension returns
    unit-length codes that cannot (a warning names the fix)."""
    torch.manual_seed(0)
    z = torch.randn(4096, 8)
    rvq = build_quantizer("residual", 8, 16, num_quantizers=4, cosine=False, codebook_dim=None).train()
    rvq(z)  # k-means initialises each level on its residual
    rvq.eval()
    idx = rvq(z).indices
    errors = [float((rvq.lookup(idx, n_levels=k) - z).pow(2).mean()) for k in range(1, 5)]
    assert all(b < 0.9 * a for a, b in zip(errors, errors[1:])), errors
    with pytest.warns(UserWarning, match="unit-length.*cosine=False.*codebook_dim"):
        build_quantizer("residual", 8, 16, num_quantizers=4, codebook_dim=None)  # still built: old checkpoints load
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_quantizer("residual", 16, 16, num_quantizers=4)  # the default: cosine in an 8-d projection of 16


def test_each_kind_has_its_own_default_commitment_weight_and_a_given_one_wins():
    from ndvq import VQVAE
    from ndvq.quantizers import default_beta

    # the default vector quantizer commits at 0.5 (issue 18: runs end higher and steadier than at 0.25)
    assert [default_beta(k) for k in ("vq", "lfq", "simvq", "residual", "grouped", "fsq")] == [0.5, 0.25, 0.25, 0.25, 0.25, None]
    assert build_quantizer("vq", 8, 16).beta == 0.5 and build_quantizer("lfq", 4, 16).beta == 0.25
    assert build_quantizer("vq", 8, 16, beta=0.1).beta == 0.1
    small = dict(n_hiddens=8, n_res_layers=1, embedding_dim=4, n_codes=16, n_head=0)
    assert VQVAE(**small).bottleneck.quantizer.beta == 0.5
    assert VQVAE(**small, quantizer={"kind": "lfq"}).bottleneck.quantizer.beta == 0.25
    assert VQVAE(**small, codebook_beta=0.25).bottleneck.quantizer.beta == 0.25  # the old default, asked for
    with pytest.raises(ConfigError, match="quantizer kind must be one of"):
        default_beta("pq")
