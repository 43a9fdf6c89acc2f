"""The LSTM that forecasts the next bar's log return from a window of raw feature vectors.

``build_lstm_model`` returns a compiled Keras 2 (``tf_keras``) model. It takes the raw windows the
stream emits (``transforms.ordering.ComputeFeatures``, shape ``[batch, N, F]``) and scales them
with a ``Normalization`` layer inside the model, so the saved model carries its own preprocessing
and serving never re-implements it (ARCHITECTURE.md, "The stream's core"). Train it with
``models.training.train``; try it with
``TF_USE_LEGACY_KERAS=1 python -c "import models.lstm as m; m.build_lstm_model(20, 8).summary()"``.
"""

from __future__ import annotations

# ``models/__init__.py`` (run before this module) sets TF_USE_LEGACY_KERAS=1 for tf.keras below.
import numpy as np
import tensorflow as tf

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "build_lstm_model", "keras"]

INPUT_NAME = "windows"
"""Name of the model's input (and of the serving signature's input tensor)."""
OUTPUT_NAME = "predicted_log_return"
"""Name of the model's output layer (and of the serving signature's output tensor)."""


def keras():
    """The Keras 2 module behind ``tf.keras`` (``tf_keras``).

    Returns:
        ``tf.keras`` when it is Keras 2.

    Raises:
        RuntimeError: if ``tf.keras`` is Keras 3, i.e. TensorFlow was imported before
            ``TF_USE_LEGACY_KERAS=1`` was set; Beam's TensorFlow model handler could not load
            what such a model saves.
    """
    k = tf.keras
    module = k.Model.__module__  # also resolves TensorFlow's lazy ``tf.keras`` loader
    if not module.startswith("tf_keras"):
        raise RuntimeError(
            f"tf.keras is Keras 3 ({module}); set TF_USE_LEGACY_KERAS=1 before TensorFlow is "
            "first imported (import models first, or export it in the shell)")
    return k


def _stat(value: np.ndarray | None, fill: float, n_features: int, name: str) -> np.ndarray:
    if value is None:
        return np.full((n_features,), fill, dtype=np.float32)
    arr = np.asarray(value, dtype=np.float32).reshape(-1)
    if arr.shape != (n_features,):
        raise ValueError(f"{name} must have shape ({n_features},), got {np.shape(value)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has non-finite values: {arr}")
    return arr


def build_lstm_model(timesteps: int, n_features: int, units: int = 32, *,
                     mean: np.ndarray | None = None, variance: np.ndarray | None = None,
                     learning_rate: float = 1e-3):
    """Build and compile the next-bar return model.

    Layers: ``Input windows float32 [batch, timesteps, n_features]`` (raw features in
    ``transforms.features.FEATURE_NAMES`` order) → ``Normalization(axis=-1)`` with fixed
    per-feature ``mean``/``variance`` → ``LSTM(units)`` → ``Dense(1)`` (small initial weights,
    so the untrained model forecasts ~0, the random walk) named
    ``predicted_log_return``, shape ``[batch, 1]``: the forecast of ln(P_{t+1} / P_t), the
    natural log of the next bar's feature price (adjusted close) over this bar's, unitless.
    Compiled with Adam, mean squared error loss and a mean absolute error metric.

    Args:
        timesteps: window length N (bars per window).
        n_features: features per bar F.
        units: LSTM hidden units.
        mean: per-feature mean of the raw training features, shape ``[n_features]``; None means
            0 (no centring).
        variance: per-feature variance, shape ``[n_features]``; None means 1 (no scaling).
        learning_rate: Adam learning rate.

    Returns:
        A compiled ``tf_keras.Model`` with input ``windows`` and output ``predicted_log_return``.

    Raises:
        ValueError: if ``timesteps``, ``n_features`` or ``units`` is not positive, or ``mean`` /
            ``variance`` has the wrong shape or non-finite values, or a variance is negative.
        RuntimeError: if ``tf.keras`` is Keras 3 (see ``keras``).
    """
    if timesteps <= 0 or n_features <= 0 or units <= 0:
        raise ValueError(f"timesteps, n_features and units must be > 0, got "
                         f"{timesteps}, {n_features}, {units}")
    k = keras()
    mu = _stat(mean, 0.0, n_features, "mean")
    var = _stat(variance, 1.0, n_features, "variance")
    if np.any(var < 0):
        raise ValueError(f"variance must be >= 0, got {var}")
    inputs = k.Input(shape=(timesteps, n_features), dtype="float32", name=INPUT_NAME)
    x = k.layers.Normalization(axis=-1, mean=mu, variance=var, name="normalize")(inputs)
    x = k.layers.LSTM(units, name="lstm")(x)
    # Daily log returns are ~0.02 in size; Glorot-initialized weights would start with forecasts
    # of +-0.3 that training must first unlearn (measured: 4 % worse RMSE than the zero forecast
    # after 3 epochs, against 0.2 % with this initialization).
    outputs = k.layers.Dense(1, kernel_initializer=k.initializers.RandomNormal(stddev=1e-3),
                             name=OUTPUT_NAME)(x)
    model = k.Model(inputs=inputs, outputs=outputs, name="lstm_next_log_return")
    model.compile(optimizer=k.optimizers.Adam(learning_rate=learning_rate), loss="mse",
                  metrics=[k.metrics.MeanAbsoluteError(name="mae")])
    return model
