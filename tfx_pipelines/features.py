"""Example keys of the TFX pipeline; feature names come from the one registry.

The per-bar features (and their order on the window's last axis) are
``transforms.features.FEATURE_NAMES``; this module only names the fields of the
``tf.train.Example`` records that ``tfx_pipelines.examples`` writes and the Transform outputs.
"""

from __future__ import annotations

from transforms.features import DEFAULT_WINDOW, FEATURE_NAMES, N_FEATURES

__all__ = [
    "AS_OF_DATE_KEY",
    "DEFAULT_WINDOW",
    "FEATURE_NAMES",
    "INSTRUMENT_KEY",
    "LABEL_KEY",
    "LAST_PRICE_KEY",
    "N_FEATURES",
    "TARGET_DATE_KEY",
    "WINDOWS_KEY",
    "WINDOWS_XF_KEY",
    "PREDICTION_KEY",
    "PRICE_PREDICTION_KEY",
]

WINDOWS_KEY = "windows"
"""Raw feature window flattened row-major: float list of N*F values (timestep-major, features in
``FEATURE_NAMES`` order); reshape to ``[N, F]``."""
LABEL_KEY = "label"
"""ln(P_{t+1} / P_t) of the feature price (adjusted close), unitless."""
LAST_PRICE_KEY = "last_price"
"""Feature price P_t at the window's last bar, quote currency."""
AS_OF_DATE_KEY = "as_of_date"
"""Session date t of the window's last bar, ISO ``YYYY-MM-DD`` bytes."""
TARGET_DATE_KEY = "target_date"
"""Session date t+1 of the label's bar, ISO bytes."""
INSTRUMENT_KEY = "instrument_id"
"""Exchange-qualified instrument id, bytes."""
WINDOWS_XF_KEY = "windows_xf"
"""Transform output: the window z-scored per feature, float ``[N*F]``."""
PREDICTION_KEY = "predicted_log_return"
"""Model output: forecast of ``LABEL_KEY``."""
PRICE_PREDICTION_KEY = "predicted_price"
"""Serving output: ``last_price * exp(predicted_log_return)``, quote currency."""
