"""Environment and hyperparameters of the TFX pipeline (the taxi template's ``configs.py``).

Local defaults are modest so ``miraikakaku train --tfx`` finishes in minutes on 2 cores; the
Google Cloud values are read from the environment (``MIRAIKAKAKU_GCP_PROJECT``,
``MIRAIKAKAKU_GCP_REGION``, ``MIRAIKAKAKU_GCS_BUCKET``, ``MIRAIKAKAKU_TFX_IMAGE``) and only used by
``vertex_runner``.
"""

from __future__ import annotations

import dataclasses
import os

from tfx_pipelines import features as fk

__all__ = [
    "GateConfig",
    "PIPELINE_NAME",
    "TrainerConfig",
    "VertexConfig",
    "PREPROCESSING_FN",
    "RUN_FN",
    "BEAM_PIPELINE_ARGS",
]

PIPELINE_NAME = "miraikakaku-lstm"
PREPROCESSING_FN = "tfx_pipelines.preprocessing.preprocessing_fn"
RUN_FN = "tfx_pipelines.trainer.run_fn"
BEAM_PIPELINE_ARGS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
"""Beam options for the components on the local machine (one in-process worker)."""


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """Trainer hyperparameters (passed as ``custom_config`` to ``run_fn``).

    Attributes:
        window: LSTM timesteps N.
        units: LSTM units.
        batch_size: examples per step.
        learning_rate: Adam learning rate.
        train_steps: gradient steps (``train_steps * batch_size`` examples).
        eval_steps: validation steps after training (Keras ``evaluate``).
        seed: seed for initialization and shuffling.
        label_scale: 1 trains on the label; -1 on the negated label, which makes a deliberately
            wrong model (the gate test's candidate that must be refused). Nothing else.
    """

    window: int = fk.DEFAULT_WINDOW
    units: int = 32
    batch_size: int = 256
    learning_rate: float = 1e-3
    train_steps: int = 800
    eval_steps: int = 50
    seed: int = 0
    label_scale: float = 1.0

    def custom_config(self) -> dict:
        """The ``custom_config`` dict ``run_fn`` reads."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in ("train_steps", "eval_steps")}


@dataclasses.dataclass(frozen=True)
class GateConfig:
    """Evaluator thresholds that decide blessing.

    Attributes:
        min_skill: lower bound on ``RmseSkill`` (1 - RMSE / RMSE of the last value); the
            default, a hair above 0, demands strictly beating the last-value baseline.
        champion_rmse_delta: candidate RMSE - champion RMSE must be <= this (TFMA absolute
            change threshold, lower is better); a hair below 0 demands strictly beating the
            latest blessed model. Ignored when there is no blessed model yet.
    """

    min_skill: float = 1e-6
    champion_rmse_delta: float = -1e-9


@dataclasses.dataclass(frozen=True)
class VertexConfig:
    """Google Cloud settings of the Vertex AI Pipelines run.

    Attributes:
        project: Google Cloud project id.
        region: Vertex AI region.
        bucket: GCS bucket (``gs://`` prefix left out) for the pipeline root and examples.
        image: container image with this repository installed (``templates/`` builds it).
        serving_image: Vertex AI prediction container for TF SavedModels.
        endpoint_name: Vertex AI endpoint the Pusher deploys to.
        machine_type: serving machine type.
    """

    project: str = os.environ.get("MIRAIKAKAKU_GCP_PROJECT", "miraikakaku-dev")
    region: str = os.environ.get("MIRAIKAKAKU_GCP_REGION", "asia-northeast1")
    bucket: str = os.environ.get("MIRAIKAKAKU_GCS_BUCKET", "miraikakaku-dev-tfx")
    image: str = os.environ.get(
        "MIRAIKAKAKU_TFX_IMAGE",
        "asia-northeast1-docker.pkg.dev/miraikakaku-dev/miraikakaku/tfx:latest")
    serving_image: str = ("asia-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest")
    endpoint_name: str = "miraikakaku-lstm"
    machine_type: str = "n1-standard-2"

    @property
    def pipeline_root(self) -> str:
        """``gs://bucket/tfx/<pipeline name>``."""
        return f"gs://{self.bucket}/tfx/{PIPELINE_NAME}"

    @property
    def examples_dir(self) -> str:
        """Where the Dataflow examples job writes ``train/`` and ``eval/``."""
        return f"gs://{self.bucket}/examples/{PIPELINE_NAME}"
