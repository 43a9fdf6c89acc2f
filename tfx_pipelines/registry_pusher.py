"""``RegistryPusher``: TFX's Pusher for the local registry layout (``models.registry``).

TFX's own filesystem Pusher names versions by Unix time; the stream's loader
(``models.registry.latest_version``) and ``miraikakaku train`` number them 1, 2, 3, ... and need
``miraikakaku_model.json`` in each. This component keeps the Pusher's contract (inputs ``model``
and ``model_blessing``, output ``pushed_model`` with ``pushed``/``pushed_destination``/
``pushed_version``; nothing is pushed unless the Evaluator blessed the model: the standard
executor's ``CheckBlessing``) and pushes with ``models.registry.publish_version``, adding the
Evaluator's overall metrics and the champion's to the metadata. In Google Cloud mode the
pipeline uses the Vertex AI Pusher instead (``tfx_pipelines.vertex_runner``).
"""

from __future__ import annotations

import json
import os
from typing import Any

from tfx import types
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import artifact_utils, component_spec, standard_artifacts
from tfx.utils import path_utils

__all__ = ["RegistryPusher", "RegistryPusherExecutor"]

MODEL_KEY, BLESSING_KEY, EVALUATION_KEY, PUSHED_KEY = (
    "model", "model_blessing", "evaluation", "pushed_model")


class RegistryPusherSpec(component_spec.ComponentSpec):
    """Inputs: model, model_blessing, evaluation (optional); output: pushed_model."""

    PARAMETERS = {
        "model_dir": component_spec.ExecutionParameter(type=str),
        "model_name": component_spec.ExecutionParameter(type=str),
        "extra_metadata": component_spec.ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        MODEL_KEY: component_spec.ChannelParameter(type=standard_artifacts.Model),
        BLESSING_KEY: component_spec.ChannelParameter(type=standard_artifacts.ModelBlessing),
        EVALUATION_KEY: component_spec.ChannelParameter(
            type=standard_artifacts.ModelEvaluation, optional=True),
    }
    OUTPUTS = {PUSHED_KEY: component_spec.ChannelParameter(type=standard_artifacts.PushedModel)}


class RegistryPusherExecutor(pusher_executor.Executor):
    """Pushes a blessed model as the next integer version of ``model_dir``."""

    def Do(self, input_dict: dict[str, list], output_dict: dict[str, list],
           exec_properties: dict[str, Any]) -> None:
        from models.registry import METADATA_FILE, publish_version
        from tfx_pipelines.metrics import read_evaluation

        self._log_startup(input_dict, output_dict, exec_properties)
        pushed = artifact_utils.get_single_instance(output_dict[PUSHED_KEY])
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(pushed)
            return
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        src = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
        meta_path = os.path.join(src, METADATA_FILE)
        meta: dict[str, Any] = {}
        if os.path.exists(meta_path):
            with open(meta_path, encoding="utf-8") as f:
                meta = json.load(f)
        meta["model_name"] = exec_properties["model_name"]
        meta["tfx_model_uri"] = model.uri
        if exec_properties.get("extra_metadata"):
            meta.update(json.loads(exec_properties["extra_metadata"]))
        evaluations = input_dict.get(EVALUATION_KEY) or []
        if evaluations:
            ev = artifact_utils.get_single_instance(evaluations)
            meta["evaluator_metrics"] = read_evaluation(ev.uri)
            meta["tfx_evaluation_uri"] = ev.uri
        blessing = artifact_utils.get_single_instance(input_dict[BLESSING_KEY])
        meta["blessed"] = True
        meta["tfx_blessing_uri"] = blessing.uri
        version = publish_version(src, exec_properties["model_dir"], meta)
        self._MarkPushed(pushed, pushed_destination=str(version.path),
                         pushed_version=version.version)


class RegistryPusher(base_component.BaseComponent):
    """Pusher into ``models.registry``'s versioned directory (see the module docstring).

    Args:
        model: the Trainer's ``model`` channel.
        model_blessing: the Evaluator's ``blessing`` channel.
        model_dir: the model family's directory (``Settings().model_dir``).
        model_name: the model family's name (``Settings().model_name``).
        evaluation: the Evaluator's ``evaluation`` channel (its metrics go into the metadata).
        extra_metadata: more JSON-serializable facts for ``miraikakaku_model.json``.
    """

    SPEC_CLASS = RegistryPusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(RegistryPusherExecutor)

    def __init__(self, model, model_blessing, model_dir: str, model_name: str,
                 evaluation=None, extra_metadata: dict | None = None) -> None:
        spec = RegistryPusherSpec(
            model=model, model_blessing=model_blessing, evaluation=evaluation,
            model_dir=str(model_dir), model_name=model_name,
            extra_metadata=json.dumps(extra_metadata) if extra_metadata else None,
            pushed_model=types.Channel(type=standard_artifacts.PushedModel))
        super().__init__(spec=spec)
