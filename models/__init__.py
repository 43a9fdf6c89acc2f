"""The forecasting model: LSTM builder (``lstm``), versioned registry (``registry``), training.

Train on the default real price files with ``python -m models.training`` (or
``models.training.train()``); the result is a new integer version under ``Settings().model_dir``
that Beam's ``TFModelHandlerNumpy`` and the API load.

Importing this package sets ``TF_USE_LEGACY_KERAS=1`` in the environment (unless already set)
before anything imports TensorFlow: TF 2.16 otherwise binds ``tf.keras`` to Keras 3, whose
``load_model`` cannot read the TF SavedModel directories Beam's TensorFlow model handler loads.
The variable only takes effect if it is set before TensorFlow's first import in the process, so
entry points that may import TensorFlow earlier (tests, the CLI) set it themselves too.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
