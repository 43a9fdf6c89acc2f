"""TFX Transform ``preprocessing_fn``: scaling only, per feature, over all timesteps.

The window (``windows``, N*F floats, row-major ``[N, F]``) is reshaped to ``[-1, F]`` so that each
of the F features of ``transforms.features.FEATURE_NAMES`` gets one mean and variance over every
timestep of every training window, and scaled with ``tft.scale_to_z_score(elementwise=True)``:
z = (x - mean) / sqrt(var), population variance over the train split (TFT's analyzers); a
feature with variance 0 is only centred (TFT's rule). ``label`` and ``last_price`` pass through.
The trainer folds the same affine map into the model's ``Normalization`` layer
(``tfx_pipelines.trainer.transform_affine``), so serving takes raw windows.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

from tfx_pipelines import features as fk

__all__ = ["preprocessing_fn"]


def preprocessing_fn(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Scale the raw windows per feature.

    Args:
        inputs: raw features parsed with the schema: ``windows`` float32 ``[batch, N*F]``,
            ``label`` and ``last_price`` float32 ``[batch]`` or ``[batch, 1]``.

    Returns:
        ``windows_xf`` float32 ``[batch, N*F]`` (z-scored per feature), ``label`` and
        ``last_price`` float32 ``[batch]``.
    """
    windows = tf.cast(inputs[fk.WINDOWS_KEY], tf.float32)
    n_values = windows.shape[-1]
    per_bar = tf.reshape(windows, [-1, fk.N_FEATURES])
    scaled = tft.scale_to_z_score(per_bar, elementwise=True)
    return {
        fk.WINDOWS_XF_KEY: tf.reshape(scaled, [-1, n_values]),
        fk.LABEL_KEY: tf.reshape(tf.cast(inputs[fk.LABEL_KEY], tf.float32), [-1]),
        fk.LAST_PRICE_KEY: tf.reshape(tf.cast(inputs[fk.LAST_PRICE_KEY], tf.float32), [-1]),
    }
