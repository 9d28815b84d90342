"""Every case of the bad-input catalogue (catalogue.py): the exit code, one line naming the offending file,
key or value, no traceback, no code executed (canary) and no file written or changed outside the run."""

from __future__ import annotations

import pytest
from catalogue import CASES, Ctx
from reliability_helpers import run_cli, snapshot


def test_catalogue_is_large_and_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 80, len(ids)
    assert {c.group for c in CASES} >= {"config", "data", "checkpoint", "codes", "pretrained", "cli"}


def _call(target) -> int:
    if callable(target):
        return target()
    try:
        return run_cli(target)
    except SystemExit as e:  # argparse
        return int(e.code)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, trained, tmp_path, monkeypatch, capsys):
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    monkeypatch.chdir(sandbox)
    ctx = Ctx(sandbox, trained["run"], trained["codes"], tmp_path / "CANARY")
    target = case.build(ctx)
    capsys.readouterr()
    before = snapshot(sandbox, trained["root"])
    code = _call(target)
    out, err = capsys.readouterr()
    assert code == case.code, f"exit {code}, expected {case.code}; stderr: {err[-800:]}"
    assert "Traceback" not in out + err, err[-2000:]
    assert not ctx.canary.exists(), "a payload ran"
    after = snapshot(sandbox, trained["root"])
    if not case.handled:
        changed = sorted(set(before.items()) ^ set(after.items()))
        assert not changed, f"files written or changed: {changed[:5]}"
        errors = [ln for ln in err.splitlines() if "error:" in ln]
        assert len(errors) == 1, err
        line = errors[0]
    else:
        line = err
    for word in case.expect:
        assert word in line, f"{word!r} not in {line!r}"
