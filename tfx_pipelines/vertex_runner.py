"""Vertex AI Pipelines definition: ``KubeflowV2DagRunner`` compiles the pipeline to JSON.

Google Cloud mode: the examples job (``tfx_pipelines.examples``) runs on Dataflow and writes
``train/``/``eval/`` to ``VertexConfig.examples_dir``; ImportExampleGen reads them; the Trainer
runs as a Vertex AI custom job (``tfx.extensions.google_cloud_ai_platform.Trainer``) and the
Pusher uploads the blessed model to Vertex AI Model Registry and deploys it to the endpoint
``VertexConfig.endpoint_name`` (``tfx.extensions.google_cloud_ai_platform.Pusher``). Nothing
here contacts Google Cloud: ``compile_pipeline`` only writes the JSON, which
``aiplatform.PipelineJob(template_path=...)`` submits. Compile with
``python -m tfx_pipelines.vertex_runner OUT.json``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tfx import v1 as tfx

from tfx_pipelines import configs
from tfx_pipelines.pipeline import create_pipeline

__all__ = ["compile_pipeline", "create_vertex_pipeline"]


def create_vertex_pipeline(vertex: configs.VertexConfig = configs.VertexConfig(),
                           trainer_config: configs.TrainerConfig = configs.TrainerConfig(),
                           gate: configs.GateConfig = configs.GateConfig()):
    """The pipeline with the Vertex AI Trainer and Pusher and Dataflow for Beam components.

    Args:
        vertex: project, region, bucket, images, endpoint.
        trainer_config: hyperparameters.
        gate: blessing thresholds.

    Returns:
        A ``tfx.dsl.Pipeline``.
    """
    gcp = tfx.extensions.google_cloud_ai_platform
    training_args = {
        "project": vertex.project,
        "worker_pool_specs": [{
            "machine_spec": {"machine_type": "n1-standard-4"},
            "replica_count": 1,
            "container_spec": {"image_uri": vertex.image},
        }],
    }

    def trainer_factory(**kwargs):
        return gcp.Trainer(**{**kwargs, "custom_config": {
            **kwargs["custom_config"],
            gcp.ENABLE_VERTEX_KEY: True,
            gcp.VERTEX_REGION_KEY: vertex.region,
            gcp.TRAINING_ARGS_KEY: training_args,
        }})

    def pusher_factory(model, model_blessing):
        return gcp.Pusher(model=model, model_blessing=model_blessing, custom_config={
            gcp.ENABLE_VERTEX_KEY: True,
            gcp.VERTEX_REGION_KEY: vertex.region,
            gcp.VERTEX_CONTAINER_IMAGE_URI_KEY: vertex.serving_image,
            gcp.SERVING_ARGS_KEY: {
                "project_id": vertex.project,
                "endpoint_name": vertex.endpoint_name,
                "machine_type": vertex.machine_type,
            },
        })

    beam_args = [
        "--runner=DataflowRunner",
        f"--project={vertex.project}",
        f"--region={vertex.region}",
        f"--temp_location=gs://{vertex.bucket}/tmp",
        f"--sdk_container_image={vertex.image}",
    ]
    return create_pipeline(
        pipeline_name=configs.PIPELINE_NAME, pipeline_root=vertex.pipeline_root,
        examples_dir=vertex.examples_dir, trainer_config=trainer_config, gate=gate,
        pusher_factory=pusher_factory, trainer_factory=trainer_factory,
        beam_pipeline_args=beam_args)


def compile_pipeline(output_filename: str,
                     vertex: configs.VertexConfig = configs.VertexConfig(),
                     trainer_config: configs.TrainerConfig = configs.TrainerConfig()) -> str:
    """Compile the Vertex pipeline to a Vertex AI Pipelines JSON file.

    Args:
        output_filename: where to write the JSON.
        vertex: Google Cloud settings; ``vertex.image`` is the default image of every step.
        trainer_config: hyperparameters.

    Returns:
        ``output_filename``.
    """
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=vertex.image),
        output_filename=output_filename)
    runner.run(create_vertex_pipeline(vertex, trainer_config), write_out=True)
    return output_filename


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tfx_pipelines.vertex_runner OUT.json``."""
    args = list(sys.argv[1:] if argv is None else argv)
    print(compile_pipeline(args[0] if args else f"{configs.PIPELINE_NAME}.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
