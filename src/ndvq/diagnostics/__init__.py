"""Diagnostics: the doctor's rules, the HTML report and hyperparameter tuning. They read run directories
(:mod:`ndvq.run.rundir`) and ask the model for its facts; none imports the training engine at import time.

- :mod:`ndvq.diagnostics.doctor`: ``diagnose(records, config, facts=None)`` / ``diagnose_run(run_dir)`` ->
  findings; ``warning_callback(config)`` for the training loop.
- :mod:`ndvq.diagnostics.rules`: the rules and the ``Thresholds`` table they use.
- :mod:`ndvq.diagnostics.report`: ``write_report(run_dirs, out)`` (self-contained HTML).
- :mod:`ndvq.diagnostics.tune`: ``tune(config, space, trials, study_dir)`` (Optuna).
- :mod:`ndvq.diagnostics.commands`: the ``doctor``, ``report`` and ``tune`` subcommands.
"""

from ndvq.diagnostics.doctor import Finding, diagnose, diagnose_run, warning_callback
from ndvq.diagnostics.rules import Thresholds

__all__ = ["Finding", "Thresholds", "diagnose", "diagnose_run", "warning_callback"]
