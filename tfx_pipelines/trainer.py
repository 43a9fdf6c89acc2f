"""TFX Trainer ``run_fn``: fits ``models.lstm`` on Transform's output and exports a plain Keras
SavedModel that takes raw windows, with the transform inside.

How the transform gets inside: Transform's ``preprocessing_fn`` is an affine map per feature
(z = (x - mean) / std). ``transform_affine`` recovers it by pushing windows of 0s and 1s through
Transform's own graph (z(0) = -mean/std, z(1) - z(0) = 1/std) and ``models.lstm.build_lstm_model``
gets that mean and variance for its ``Normalization`` layer. The LSTM and output layers are then
trained on Transform's ``windows_xf`` through a sub-model that shares them, so training consumes
the transformed examples and the exported model applies the identical scaling (a test checks it
against ``TFTransformOutput.transform_raw_features`` on real rows). The export is what Beam's
``TFModelHandlerNumpy`` loads with ``tf.keras.models.load_model``; its signatures:

* ``serving_default``: ``windows`` float32 ``[batch, N, F]`` (raw), ``last_price`` float32
  ``[batch]`` (quote currency) → ``predicted_log_return`` ``[batch, 1]`` and ``predicted_price``
  ``[batch, 1]`` = last_price * exp(predicted_log_return), quote currency.
* ``serving_examples``: serialized ``tf.train.Example`` ``[batch]`` → ``predicted_log_return``
  ``[batch]`` and ``predicted_price`` ``[batch]`` (for TFMA).

``miraikakaku_model.json`` (``models.registry`` metadata: hyperparameters, normalization,
validation metrics on the eval split) is written beside the SavedModel, so the registry Pusher
only adds the Evaluator's numbers and a version.
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np
import tensorflow as tf

from tfx_pipelines import features as fk

__all__ = ["run_fn", "transform_affine", "export_signatures", "read_split"]


def transform_affine(tf_transform_output, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and variance of Transform's z-score, recovered from its graph.

    Args:
        tf_transform_output: ``tft.TFTransformOutput`` of the Transform component.
        window: timesteps N.

    Returns:
        ``(mean, variance)``, float64 ``[F]``; z = (x - mean) / sqrt(variance). A feature that
        Transform only centred (variance 0) gets variance 1, which does the same.

    Raises:
        ValueError: if the map is not affine with a positive slope (1/std) for every feature.
    """
    spec = tf_transform_output.raw_feature_spec()
    n = window * fk.N_FEATURES
    batch = {}
    for name, s in spec.items():
        shape = [2] + list(getattr(s, "shape", []) or [])
        if s.dtype == tf.string:
            batch[name] = tf.constant("", shape=shape, dtype=tf.string)
        else:
            batch[name] = tf.zeros(shape, dtype=s.dtype)
    batch[fk.WINDOWS_KEY] = tf.constant(np.stack([np.zeros(n), np.ones(n)]), tf.float32)
    z = tf_transform_output.transform_raw_features(batch)[fk.WINDOWS_XF_KEY].numpy()
    z = z.astype(np.float64).reshape(2, window, fk.N_FEATURES)[:, 0, :]
    slope = z[1] - z[0]
    if not np.all(np.isfinite(slope)) or np.any(slope <= 0):
        raise ValueError(f"Transform is not an increasing affine map per feature: {slope}")
    std = 1.0 / slope
    mean = -z[0] * std
    return mean, std ** 2


def read_split(data_accessor, files, tf_transform_output, batch_size: int, window: int,
               shuffle: bool, seed: int, num_epochs: int | None = None):
    """``tf.data`` of ``(windows_xf [batch, N, F], label [batch])`` from transformed examples.

    Args:
        data_accessor: ``fn_args.data_accessor``.
        files: ``fn_args.train_files`` or ``eval_files``.
        tf_transform_output: ``tft.TFTransformOutput``.
        batch_size: examples per batch.
        window: timesteps N.
        shuffle: shuffle (seeded) or keep file order.
        seed: shuffle seed.
        num_epochs: None repeats forever.
    """
    from tfx_bsl.public import tfxio

    ds = data_accessor.tf_dataset_factory(
        files, tfxio.TensorFlowDatasetOptions(batch_size=batch_size, label_key=fk.LABEL_KEY,
                                              shuffle=shuffle, shuffle_seed=seed,
                                              num_epochs=num_epochs),
        tf_transform_output.transformed_metadata.schema)
    return ds.map(lambda f, y: (tf.reshape(f[fk.WINDOWS_XF_KEY], [-1, window, fk.N_FEATURES]),
                                tf.reshape(y, [-1])))


def export_signatures(model, window: int) -> dict:
    """The ``serving_default`` and ``serving_examples`` signatures of ``model`` (see module doc).

    Args:
        model: the Keras model (raw windows ``[batch, N, F]`` → log return ``[batch, 1]``).
        window: timesteps N.
    """
    n_feat = fk.N_FEATURES

    @tf.function(input_signature=[
        tf.TensorSpec([None, window, n_feat], tf.float32, name=fk.WINDOWS_KEY),
        tf.TensorSpec([None], tf.float32, name=fk.LAST_PRICE_KEY)])
    def serve(windows, last_price):
        r = model(windows, training=False)
        price = tf.reshape(last_price, [-1, 1]) * tf.exp(r)
        return {fk.PREDICTION_KEY: r, fk.PRICE_PREDICTION_KEY: price}

    spec = {fk.WINDOWS_KEY: tf.io.FixedLenFeature([window * n_feat], tf.float32),
            fk.LAST_PRICE_KEY: tf.io.FixedLenFeature([], tf.float32)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(examples):
        parsed = tf.io.parse_example(examples, spec)
        w = tf.reshape(parsed[fk.WINDOWS_KEY], [-1, window, n_feat])
        r = tf.reshape(model(w, training=False), [-1])
        return {fk.PREDICTION_KEY: r,
                fk.PRICE_PREDICTION_KEY: parsed[fk.LAST_PRICE_KEY] * tf.exp(r)}

    return {"serving_default": serve, "serving_examples": serve_examples}


def _predict(model, ds) -> tuple[np.ndarray, np.ndarray]:
    ys, ps = [], []
    for x, y in ds:
        ps.append(model(x, training=False).numpy().reshape(-1))
        ys.append(y.numpy().reshape(-1))
    return np.concatenate(ys), np.concatenate(ps)


def run_fn(fn_args) -> None:
    """Train the LSTM and export it (TFX Trainer entry point, ``configs.RUN_FN``).

    Args:
        fn_args: ``tfx.components.FnArgs``: ``train_files``/``eval_files`` (transformed
            examples), ``transform_output``, ``serving_model_dir``, ``train_steps``,
            ``eval_steps`` and ``custom_config`` (``configs.TrainerConfig.custom_config``;
            ``label_scale`` may be set to -1 to train on the negated label - the deliberately
            wrong candidate of the gate test).

    Raises:
        ValueError: if Transform is not an affine map (``transform_affine``).
    """
    import tensorflow_transform as tft

    from models.lstm import build_lstm_model, keras
    from models.training import evaluate_forecasts

    cfg = dict(fn_args.custom_config or {})
    window = int(cfg.get("window", fk.DEFAULT_WINDOW))
    units = int(cfg.get("units", 32))
    batch_size = int(cfg.get("batch_size", 256))
    lr = float(cfg.get("learning_rate", 1e-3))
    seed = int(cfg.get("seed", 0))
    label_scale = float(cfg.get("label_scale", 1.0))
    k = keras()
    k.utils.set_random_seed(seed)
    tft_out = tft.TFTransformOutput(fn_args.transform_output)
    mean, variance = transform_affine(tft_out, window)
    model = build_lstm_model(window, fk.N_FEATURES, units, mean=mean, variance=variance,
                             learning_rate=lr)
    # The sub-model shares the LSTM and output layers and eats Transform's windows_xf.
    scaled_in = k.Input(shape=(window, fk.N_FEATURES), dtype="float32", name=fk.WINDOWS_XF_KEY)
    core_out = model.get_layer(fk.PREDICTION_KEY)(model.get_layer("lstm")(scaled_in))
    core = k.Model(scaled_in, core_out, name="lstm_on_transformed")
    core.compile(optimizer=k.optimizers.Adam(learning_rate=lr), loss="mse",
                 metrics=[k.metrics.MeanAbsoluteError(name="mae")])
    train_ds = read_split(fn_args.data_accessor, fn_args.train_files, tft_out, batch_size,
                          window, shuffle=True, seed=seed)
    if label_scale != 1.0:
        train_ds = train_ds.map(lambda x, y: (x, y * label_scale))
    eval_ds = read_split(fn_args.data_accessor, fn_args.eval_files, tft_out, batch_size,
                         window, shuffle=False, seed=seed)
    t0 = time.perf_counter()
    history = core.fit(train_ds, steps_per_epoch=int(fn_args.train_steps), epochs=1,
                       validation_data=eval_ds, validation_steps=int(fn_args.eval_steps or 1),
                       verbose=2)
    fit_seconds = time.perf_counter() - t0
    full_eval = read_split(fn_args.data_accessor, fn_args.eval_files, tft_out, 4096, window,
                           shuffle=False, seed=seed, num_epochs=1)
    y, p = _predict(core, full_eval)
    metrics = evaluate_forecasts(y, p)
    metadata = {
        "description": "LSTM forecast of the next bar's log return ln(P_t+1 / P_t) of the "
                       "feature price (adjusted close) from raw feature windows; trained by "
                       "the TFX pipeline (tfx_pipelines)",
        "trainer": "tfx",
        "input_name": fk.WINDOWS_KEY,
        "input_shape": [None, window, fk.N_FEATURES],
        "output_name": fk.PREDICTION_KEY,
        "signatures": {"serving_default": [fk.WINDOWS_KEY, fk.LAST_PRICE_KEY],
                       "serving_examples": ["examples"]},
        "feature_names": list(fk.FEATURE_NAMES),
        "window": window,
        "n_features": fk.N_FEATURES,
        "units": units,
        "batch_size": batch_size,
        "learning_rate": lr,
        "train_steps": int(fn_args.train_steps),
        "seed": seed,
        "label_scale": label_scale,
        "validation_metrics": metrics,
        "history": {key: [float(v) for v in vals] for key, vals in history.history.items()},
        "normalization": {"mean": [float(v) for v in mean],
                          "variance": [float(v) for v in variance],
                          "source": "TFX Transform (tft.scale_to_z_score, elementwise)"},
        "timings_seconds": {"fit": round(fit_seconds, 2)},
        "versions": {"tensorflow": str(tf.__version__)},
    }
    out = fn_args.serving_model_dir
    model.save(out, save_format="tf", save_traces=False,
               signatures=export_signatures(model, window))
    with tf.io.gfile.GFile(os.path.join(out, "miraikakaku_model.json"), "w") as f:
        f.write(json.dumps(metadata, indent=2, default=_json_default) + "\n")


def _json_default(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    raise TypeError(f"not JSON-serializable: {v!r}")
