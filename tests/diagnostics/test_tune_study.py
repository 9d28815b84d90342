"""`ndvq tune`: space parsing, pruning, interruption and resume, outputs."""

from __future__ import annotations

import math
import types

import optuna
import pytest
import yaml

from ndvq.config import load_config
from ndvq.diagnostics.tune import TuneError, load_space, tune

S = optuna.trial.TrialState


def _files(tmp_path, space: str, base: str = "model: {videogpt: {n_hiddens: 16, n_head: 0}}\ntrain: {max_steps: 3}\n"):
    (tmp_path / "base.yaml").write_text(base)
    (tmp_path / "space.yaml").write_text(space)
    return tmp_path / "base.yaml", tmp_path / "space.yaml"


class FakeTrain:
    """Stands in for ndvq.run.train.train: reports 3 validations with a loss that depends on the config."""

    def __init__(self, interrupt_at: int | None = None):
        self.calls, self.interrupt_at, self.configs = 0, interrupt_at, []

    def __call__(self, cfg, resume=None, on_validation=None, on_warning=None):
        self.calls += 1
        self.configs.append(cfg)
        if self.calls == self.interrupt_at:
            on_validation(1, {"loss": 5.0, "recon_loss": 5.0})
            raise KeyboardInterrupt
        v = abs(math.log10(cfg.train.learning_rate) + 3) + 10 * cfg.model.videogpt.num_res_blocks
        for step in (1, 2, 3):
            on_validation(step, {"loss": v + 2.0 / step, "recon_loss": v + 1.0 / step, "psnr": 30 - v})
        return types.SimpleNamespace(run_dir=None, best_val_loss=v)


SPACE = """
train.learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}
model.videogpt.num_res_blocks: {low: 0, high: 2}
model.videogpt.downsample: {choices: [[4, 4], [2, 2]]}
model.quantizer.restart: [batch, replay]
"""


def test_load_space_kinds(tmp_path):
    _, space = _files(tmp_path, SPACE + "model.quantizer.beta: {low: 0.1, high: 1, type: float}\noptuna: {metric: psnr, direction: maximize}\n")
    params, opts = load_space(space)
    kinds = {p.key: p.kind for p in params}
    assert kinds == {"train.learning_rate": "float", "model.videogpt.num_res_blocks": "int",
                     "model.videogpt.downsample": "categorical", "model.quantizer.restart": "categorical",
                     "model.quantizer.beta": "float"}
    assert params[0].log and opts == {"metric": "psnr", "direction": "maximize"}


@pytest.mark.parametrize("space, match", [
    ("train.learning_rate: {low: 1.0e-3}", "needs low and high"),
    ("train.learning_rate: {low: 0, high: 1.0e-3, log: true}", "log range needs low > 0"),
    ("train.learning_rate: {low: 1.0e-2, high: 1.0e-3}", "low must be below high"),
    ("train.learning_rate: {low: 1.0e-4, high: 1.0e-3, scale: log}", "unknown field"),
    ("train.learning_rate: 0.1", "expected a list of choices"),
    ("model.n_codes: {choices: []}", "non-empty list"),
    ("optuna: {direction: up}\nmodel.n_codes: [8]", "minimize or maximize"),
    ("[1, 2]", "must map config keys"),
])
def test_space_errors(tmp_path, space, match):
    _, p = _files(tmp_path, space)
    with pytest.raises(TuneError, match=match):
        load_space(p)


def test_space_values_are_validated_before_training(tmp_path):
    base, space = _files(tmp_path, "model.n_codes: {low: 1, high: 64}\n")
    fake = FakeTrain()
    with pytest.raises(TuneError, match=r"model.n_codes=1 does not give a valid config"):
        tune(base, space, 2, tmp_path / "s", train_fn=fake)
    assert fake.calls == 0


def test_interrupted_study_resumes_and_writes_best_config(tmp_path):
    base, space = _files(tmp_path, SPACE)
    study_dir = tmp_path / "study"
    fake = FakeTrain(interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        tune(base, space, 3, study_dir, train_fn=fake)
    assert (study_dir / "study.db").is_file() and fake.calls == 2
    interrupted = fake.configs[1]

    fake2 = FakeTrain()
    res = tune(base, space, 3, study_dir, train_fn=fake2)
    trials = res.study.get_trials()
    assert [t.state for t in trials].count(S.COMPLETE) == 3 and fake2.calls == 2
    retried = fake2.configs[0]  # the interrupted trial runs again with the same parameters
    assert retried.train.learning_rate == interrupted.train.learning_rate
    assert retried.model.videogpt.downsample == interrupted.model.videogpt.downsample
    assert retried.run.name != interrupted.run.name and str(study_dir / "trials") in str(retried.run.root)

    best = load_config(res.best_config_path)  # a valid ndvq train config
    best_trial = min((t for t in trials if t.state == S.COMPLETE), key=lambda t: t.value)
    assert best.train.learning_rate == pytest.approx(best_trial.params["train.learning_rate"])
    assert best.model.videogpt.downsample == yaml.safe_load(best_trial.params["model.videogpt.downsample"])
    assert best.train.max_steps == 3 and best.model.videogpt.n_hiddens == 16
    assert res.importance_path is not None and res.importance_path.stat().st_size > 1000
    lines = (study_dir / "results.csv").read_text().splitlines()
    assert lines[0].startswith("trial,state,recon_loss") and len(lines) == 1 + len(trials)
    assert "best: trial" in res.table

    fake3 = FakeTrain()  # already done: nothing runs
    tune(base, space, 3, study_dir, train_fn=fake3)
    assert fake3.calls == 0


def test_stale_running_trial_is_retried(tmp_path):
    """A process killed mid-trial leaves it RUNNING in the database; the next run re-queues it."""
    base, space = _files(tmp_path, "train.learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}\n")
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    study = optuna.create_study(study_name="study", storage=f"sqlite:///{study_dir / 'study.db'}")
    t = study.ask({"train.learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
    lr = t.params["train.learning_rate"]
    fake = FakeTrain()
    res = tune(base, space, 1, study_dir, train_fn=fake)
    assert fake.configs[0].train.learning_rate == pytest.approx(lr)
    assert res.study.trials[0].state == S.FAIL and res.study.trials[1].state == S.COMPLETE


def test_pruning_on_intermediate_val_loss(tmp_path):
    """Two good trials, then a bad one (via an override) is pruned at its first validation."""
    base, space = _files(tmp_path, "train.weight_decay: [0.0]\noptuna: {n_startup_trials: 1}\n")
    tune(base, space, 2, tmp_path / "s", overrides=["model.videogpt.num_res_blocks=0"], train_fn=FakeTrain())
    bad = FakeTrain()
    res = tune(base, space, 3, tmp_path / "s", overrides=["model.videogpt.num_res_blocks=2"], train_fn=bad)
    last = res.study.trials[-1]
    assert last.state == S.PRUNED and list(last.intermediate_values) == [1] and bad.calls == 1


def test_changed_space_is_a_clear_error(tmp_path):
    base, space = _files(tmp_path, "model.videogpt.num_res_blocks: [0, 1]\n")
    tune(base, space, 1, tmp_path / "s", train_fn=FakeTrain())
    (tmp_path / "space.yaml").write_text("model.videogpt.num_res_blocks: [2, 3]\n")
    with pytest.raises(TuneError, match="space of model.videogpt.num_res_blocks changed"):
        tune(base, space, 2, tmp_path / "s", train_fn=FakeTrain())


def test_too_few_trials_for_importances(tmp_path):
    base, space = _files(tmp_path, SPACE)
    res = tune(base, space, 1, tmp_path / "s", train_fn=FakeTrain())
    assert res.importance_path is None and "at least 2 complete trials" in res.importance_note
    assert res.best_config_path.is_file()


def test_maximize_metric(tmp_path):
    base, space = _files(tmp_path, SPACE + "optuna: {metric: psnr, direction: maximize}\n")
    res = tune(base, space, 2, tmp_path / "s", train_fn=FakeTrain())
    assert res.study.best_value == max(t.value for t in res.study.trials if t.state == S.COMPLETE)
    assert res.study.best_value <= 30


def test_loop_stopped_by_ctrl_c_counts_as_interrupted(tmp_path):
    """The loop turns Ctrl-C into a clean stop (stopped="interrupted"); that trial must not count as complete."""
    base, space = _files(tmp_path, SPACE)

    def stopped(cfg, resume=None, on_validation=None, on_warning=None):
        on_validation(1, {"recon_loss": 1.0})
        return types.SimpleNamespace(stopped="interrupted", best_val_loss=1.0)

    with pytest.raises(KeyboardInterrupt):
        tune(base, space, 2, tmp_path / "s", train_fn=stopped)
    res = tune(base, space, 1, tmp_path / "s", train_fn=FakeTrain())
    first, retry = res.study.trials[:2]
    assert first.state == S.FAIL and retry.state == S.COMPLETE and retry.params == first.params
