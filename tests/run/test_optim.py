"""LR schedules, parameter groups, LR scaling and the device-side skip of non-finite steps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ndvq.run.optim import lr_lambda, make_optimizer, param_groups, scaled_lr, skip_if_nonfinite


def test_schedules():
    const = lr_lambda("constant", 4, 100, 0.1, 10)
    assert [round(const(s), 2) for s in (0, 3, 4, 50)] == [0.2, 0.8, 1.0, 1.0]
    cos = lr_lambda("cosine", 0, 100, 0.1, 10)
    assert cos(0) == pytest.approx(1.0) and cos(50) == pytest.approx(0.55) and cos(100) == pytest.approx(0.1)
    assert cos(500) == pytest.approx(0.1)
    cyc = lr_lambda("cyclic", 0, 100, 0.2, 10)
    assert [round(cyc(s), 2) for s in (0, 5, 10, 15)] == [1.0, 0.2, 1.0, 0.2]
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_lambda("step", 0, 1, 0, 1)


def test_param_groups_and_scaling():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.norm = nn.Linear(3, 3), nn.LayerNorm(3)
            self.codebook = nn.Parameter(torch.randn(8, 3))

        def codebook_parameters(self):
            return [self.codebook]

    groups = param_groups(M(), lr=1e-3, weight_decay=0.1, codebook_lr=1e-2)
    assert [len(g["params"]) for g in groups] == [1, 3, 1]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0, 0.0] and groups[2]["lr"] == 1e-2
    assert scaled_lr(1e-3, 4, True) == pytest.approx(4e-3) and scaled_lr(1e-3, 4, False) == 1e-3


def test_nonfinite_step_is_skipped_on_device():
    m = nn.Linear(3, 2)
    opt = make_optimizer(param_groups(m, 1e-2, 0.0), 1e-2, 0.9, 0.999)
    assert opt.defaults.get("fused")
    x = torch.randn(4, 3)
    for bad in (False, True, False):
        m(x).sum().backward()
        before = m.weight.detach().clone()
        assert skip_if_nonfinite(opt, torch.tensor(bad))
        opt.step()
        opt.zero_grad()
        assert torch.equal(before, m.weight) == bad
    assert all(float(s["step"]) == 2 for s in opt.state.values())  # the skipped step did not count
