"""The TFX training pipeline: sequence examples → statistics → schema → validation → Transform →
Trainer (the LSTM of ``models.lstm``) → Evaluator gate → Pusher (registry version or Vertex AI).

Layout follows the TFX taxi template: ``features.py`` (keys), ``configs.py`` (environment),
``examples.py`` (Beam job writing the sequence examples), ``preprocessing.py`` (Transform),
``trainer.py`` (``run_fn``), ``metrics.py`` (custom TFMA metrics), ``registry_pusher.py``,
``pipeline.py`` (``create_pipeline``), ``local_runner.py`` and ``vertex_runner.py``. Run it with
``miraikakaku train --tfx``.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
