"""Custom TFMA metrics (Keras metrics TFMA loads by ``module``/``class_name``) and result reading.

* ``DirectionalAccuracy``: share of nonzero realized returns whose sign the forecast matches (a
  zero forecast counts as wrong) - ``models.training.evaluate_forecasts``'s definition.
* ``LastValueRmse``: RMSE of the last-value forecast (next price = last price, i.e. predicted log
  return 0): sqrt(mean(y^2)).
* ``RmseSkill``: 1 - RMSE(model) / RMSE(last value), the RMSE skill score against the random walk
  (Murphy 1988, "Skill scores based on the mean square error"); > 0 means the model beats the
  last-value baseline. The Evaluator gate puts a lower bound on it.

``read_evaluation`` pulls the overall-slice numbers out of an Evaluator output directory.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = [
    "DirectionalAccuracy",
    "LastValueRmse",
    "RmseSkill",
    "read_evaluation",
    "read_gate_failures",
]

_keras = tf.keras


def _flat(y_true, y_pred, sample_weight):
    t = tf.reshape(tf.cast(y_true, tf.float64), [-1])
    p = tf.reshape(tf.cast(y_pred, tf.float64), [-1])
    w = (tf.ones_like(t) if sample_weight is None
         else tf.reshape(tf.cast(sample_weight, tf.float64), [-1]))
    return t, p, w


class DirectionalAccuracy(_keras.metrics.Metric):
    """Share of examples with a nonzero label whose forecast has the label's sign, in [0, 1]."""

    def __init__(self, name: str = "directional_accuracy", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.hits = self.add_weight(name="hits", initializer="zeros", dtype=tf.float64)
        self.count = self.add_weight(name="count", initializer="zeros", dtype=tf.float64)

    def update_state(self, y_true, y_pred, sample_weight=None):
        t, p, w = _flat(y_true, y_pred, sample_weight)
        nz = tf.cast(tf.not_equal(t, 0.0), tf.float64) * w
        hit = tf.cast(tf.equal(tf.sign(p), tf.sign(t)), tf.float64)
        self.hits.assign_add(tf.reduce_sum(hit * nz))
        self.count.assign_add(tf.reduce_sum(nz))

    def result(self):
        return tf.math.divide_no_nan(self.hits, self.count)


class _SquaredErrors(_keras.metrics.Metric):
    def __init__(self, name: str, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.sse = self.add_weight(name="sse", initializer="zeros", dtype=tf.float64)
        self.ssy = self.add_weight(name="ssy", initializer="zeros", dtype=tf.float64)
        self.n = self.add_weight(name="n", initializer="zeros", dtype=tf.float64)

    def update_state(self, y_true, y_pred, sample_weight=None):
        t, p, w = _flat(y_true, y_pred, sample_weight)
        self.sse.assign_add(tf.reduce_sum(w * tf.square(p - t)))
        self.ssy.assign_add(tf.reduce_sum(w * tf.square(t)))
        self.n.assign_add(tf.reduce_sum(w))


class LastValueRmse(_SquaredErrors):
    """RMSE of the last-value (zero log return) forecast on the same examples."""

    def __init__(self, name: str = "last_value_rmse", **kwargs) -> None:
        super().__init__(name=name, **kwargs)

    def result(self):
        return tf.sqrt(tf.math.divide_no_nan(self.ssy, self.n))


class RmseSkill(_SquaredErrors):
    """1 - RMSE(model) / RMSE(last value); 0 for equal, > 0 when the model is better."""

    def __init__(self, name: str = "rmse_skill_vs_last_value", **kwargs) -> None:
        super().__init__(name=name, **kwargs)

    def result(self):
        return 1.0 - tf.sqrt(tf.math.divide_no_nan(self.sse, self.ssy))


def read_evaluation(evaluation_uri: str) -> dict[str, float]:
    """Overall-slice metrics of an Evaluator output.

    Args:
        evaluation_uri: the ``ModelEvaluation`` artifact's directory.

    Returns:
        ``{metric name: value}`` for the candidate, plus ``champion_<name>`` for the baseline
        model when the Evaluator compared against one (diff metrics are left out).

    Raises:
        OSError: if the directory holds no metrics.
    """
    import tensorflow_model_analysis as tfma

    out: dict[str, float] = {}
    for mfs in tfma.load_metrics(evaluation_uri):
        if mfs.slice_key.single_slice_keys:
            continue
        for kv in mfs.metric_keys_and_values:
            key = kv.key
            if key.is_diff:
                continue
            if not kv.value.HasField("double_value"):
                continue
            prefix = "champion_" if key.model_name == "baseline" else ""
            out[prefix + key.name] = float(kv.value.double_value.value)
    return out


def read_gate_failures(evaluation_uri: str) -> list[str]:
    """The thresholds a candidate failed, as ``"<metric>: <threshold kind>"`` (empty: passed).

    Args:
        evaluation_uri: the ``ModelEvaluation`` artifact's directory.

    Raises:
        OSError: if the directory holds no validation result.
    """
    import tensorflow_model_analysis as tfma

    result = tfma.load_validation_result(evaluation_uri)
    out = []
    for per_slice in result.metric_validations_per_slice:
        for failure in per_slice.failures:
            kind = "threshold"
            if failure.metric_threshold.HasField("change_threshold"):
                kind = "change_threshold vs champion"
            elif failure.metric_threshold.HasField("value_threshold"):
                kind = "value_threshold"
            out.append(f"{failure.metric_key.name}: {kind}")
    return sorted(set(out))
