"""Running a model: the run directory, checkpoints, the training loop and eval / encode / decode.

- :mod:`ndvq.run.rundir`: run-directory layout, checkpoint lookup, ``read_metrics``, model facts
  (no torch: the doctor and the report use it).
- :mod:`ndvq.run.checkpoint`: the only place that saves / loads checkpoints and turns one into a model.
- :mod:`ndvq.run.train`: the training loop (``train(cfg, resume=None, on_validation=None, on_warning=None)``).
- :mod:`ndvq.run.infer`: ``evaluate``, ``encode``, ``decode``.

Nothing is imported here, so ``import ndvq.run.rundir`` does not pull in torch or the training engine.
"""
