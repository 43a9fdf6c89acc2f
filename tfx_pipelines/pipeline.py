"""The TFX pipeline topology: ``create_pipeline(...) -> tfx.dsl.Pipeline`` (taxi template).

ImportExampleGen (the ``train``/``eval`` TFRecords of ``tfx_pipelines.examples``) →
StatisticsGen → SchemaGen → ExampleValidator → Transform (``preprocessing.preprocessing_fn``) →
Trainer (``trainer.run_fn``) → Evaluator (TFMA on the later ``eval`` split: RMSE, MAE,
directional accuracy, last-value RMSE, RMSE skill; the gate) → Pusher.

The gate (``eval_config``): blessed only if ``RmseSkill`` >= ``GateConfig.min_skill`` (beats the
last-value baseline, next price = last price) AND, when a blessed model exists
(``LatestBlessedModelStrategy`` resolver), candidate RMSE - champion RMSE <=
``GateConfig.champion_rmse_delta`` (TFMA change threshold, lower is better). Without a champion
TFX's Evaluator skips change thresholds (``rubber_stamp``). The Pusher pushes only blessed
models: ``registry_pusher.RegistryPusher`` locally, or the component ``pusher`` passed in
(Vertex AI in ``vertex_runner``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx

from tfx_pipelines import configs
from tfx_pipelines import features as fk

__all__ = ["create_pipeline", "eval_config", "example_gen_input_config"]

_METRICS_MODULE = "tfx_pipelines.metrics"


def example_gen_input_config():
    """ImportExampleGen's input splits: ``train/*`` and ``eval/*`` (already split by time)."""
    return tfx.proto.Input(splits=[
        tfx.proto.Input.Split(name="train", pattern="train/*"),
        tfx.proto.Input.Split(name="eval", pattern="eval/*"),
    ])


def eval_config(gate: configs.GateConfig) -> tfma.EvalConfig:
    """TFMA config: metrics on the overall slice and the blessing thresholds of ``gate``."""
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name="serving_examples", label_key=fk.LABEL_KEY,
                                    prediction_key=fk.PREDICTION_KEY)],
        slicing_specs=[tfma.SlicingSpec()],
        metrics_specs=[tfma.MetricsSpec(metrics=[
            tfma.MetricConfig(class_name="ExampleCount"),
            tfma.MetricConfig(
                class_name="RootMeanSquaredError",
                threshold=tfma.MetricThreshold(change_threshold=tfma.GenericChangeThreshold(
                    direction=tfma.MetricDirection.LOWER_IS_BETTER,
                    absolute={"value": gate.champion_rmse_delta}))),
            tfma.MetricConfig(class_name="MeanAbsoluteError"),
            tfma.MetricConfig(class_name="DirectionalAccuracy", module=_METRICS_MODULE),
            tfma.MetricConfig(class_name="LastValueRmse", module=_METRICS_MODULE),
            tfma.MetricConfig(
                class_name="RmseSkill", module=_METRICS_MODULE,
                threshold=tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(
                    lower_bound={"value": gate.min_skill}))),
        ])])


def create_pipeline(*, pipeline_name: str, pipeline_root: str, examples_dir: str,
                    trainer_config: configs.TrainerConfig = configs.TrainerConfig(),
                    gate: configs.GateConfig = configs.GateConfig(),
                    model_dir: str | None = None, model_name: str = "lstm_daily",
                    pusher_factory: Callable | None = None,
                    trainer_factory: Callable | None = None,
                    metadata_connection_config=None,
                    beam_pipeline_args: Sequence[str] | None = None,
                    enable_cache: bool = True) -> tfx.dsl.Pipeline:
    """Build the pipeline.

    Args:
        pipeline_name: the pipeline's name in ML Metadata.
        pipeline_root: where component outputs go (local directory or ``gs://``).
        examples_dir: output of ``tfx_pipelines.examples`` (``train/``, ``eval/``).
        trainer_config: hyperparameters and step counts.
        gate: blessing thresholds.
        model_dir: registry directory for the local ``RegistryPusher``; ignored when
            ``pusher_factory`` is given.
        model_name: the model family's name written into the metadata.
        pusher_factory: ``f(model, model_blessing) -> component`` for another pusher (Vertex).
        trainer_factory: ``f(**trainer kwargs) -> component`` for another trainer (Vertex);
            default ``tfx.components.Trainer``.
        metadata_connection_config: ML Metadata connection (local sqlite); None on Vertex.
        beam_pipeline_args: Beam options for the Beam-based components.
        enable_cache: reuse outputs of components whose inputs did not change.

    Returns:
        The ``tfx.dsl.Pipeline`` (9 components: 8 plus the champion resolver).

    Raises:
        ValueError: if neither ``model_dir`` nor ``pusher_factory`` is given.
    """
    if model_dir is None and pusher_factory is None:
        raise ValueError("give model_dir (local registry) or pusher_factory")
    example_gen = tfx.components.ImportExampleGen(
        input_base=examples_dir, input_config=example_gen_input_config())
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"],
                                          infer_feature_shape=True)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"],
        preprocessing_fn=configs.PREPROCESSING_FN)
    trainer_kwargs = {
        "run_fn": configs.RUN_FN,
        "examples": transform.outputs["transformed_examples"],
        "transform_graph": transform.outputs["transform_graph"],
        "schema": schema_gen.outputs["schema"],
        "train_args": tfx.proto.TrainArgs(num_steps=trainer_config.train_steps),
        "eval_args": tfx.proto.EvalArgs(num_steps=trainer_config.eval_steps),
        "custom_config": trainer_config.custom_config()}
    trainer = (trainer_factory or tfx.components.Trainer)(**trainer_kwargs)
    champion = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"], model=trainer.outputs["model"],
        baseline_model=champion.outputs["model"], eval_config=eval_config(gate),
        example_splits=["eval"])
    if pusher_factory is not None:
        pusher = pusher_factory(trainer.outputs["model"], evaluator.outputs["blessing"])
    else:
        from tfx_pipelines.registry_pusher import RegistryPusher

        pusher = RegistryPusher(model=trainer.outputs["model"],
                                model_blessing=evaluator.outputs["blessing"],
                                evaluation=evaluator.outputs["evaluation"],
                                model_dir=str(model_dir), model_name=model_name)
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name, pipeline_root=pipeline_root,
        components=[example_gen, statistics_gen, schema_gen, example_validator, transform,
                    trainer, champion, evaluator, pusher],
        enable_cache=enable_cache, metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args or []))
