"""Core: what every other part of the platform stands on, with no heavy imports.

- :mod:`tasks.core.config`: the settings of one installation (data root, MLflow URI, Beam
  runner, serving address), read from the environment with embedded defaults;
- :mod:`tasks.core.hardware`: what the CPU computes natively (the ``precision=auto``
  choice);
- :mod:`tasks.core.files`: atomic directories and JSON files, checksums;
- :mod:`tasks.core.run`: the run contract: :class:`~tasks.core.run.RunLayout` owns a run's
  key and every path and artifact name of it; typed step results travel through XCom as
  small dicts.
"""
