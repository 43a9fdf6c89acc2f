"""Versioned model directory: ``model_dir/<int version>/`` as TF Serving and Vertex AI expect.

Each version directory holds a TF SavedModel (``tf.keras.models.load_model(path)`` loads it, which
is what Beam's ``TFModelHandlerNumpy(model_uri=path)`` calls; its ``serving_default`` signature
maps ``windows`` to ``predicted_log_return`` for TF Serving) and ``miraikakaku_model.json`` with
how it was trained and how well it did (see ``save_version``). A version is written to a hidden
temporary directory and renamed into place, so a reader never sees a half-written version; only
directories that have the metadata file count as versions. List what exists with
``python -m models.registry [model_dir]``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "METADATA_FILE",
    "ModelVersion",
    "latest_version",
    "list_versions",
    "next_version",
    "publish_version",
    "save_version",
]

METADATA_FILE = "miraikakaku_model.json"
"""Metadata file name inside a version directory."""


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    """One saved model version.

    Attributes:
        name: model name (``lstm_daily``), from the metadata (else the model directory's name).
        version: the integer version as text (``"3"``), the directory name.
        path: the version directory (a SavedModel; pass ``str(path)`` as ``model_uri``).
        metadata: the parsed ``miraikakaku_model.json``.
    """

    name: str
    version: str
    path: Path
    metadata: dict[str, Any]

    def load(self):
        """Load the model with ``tf.keras.models.load_model`` (needs TensorFlow).

        Returns:
            The compiled ``tf_keras.Model``.

        Raises:
            OSError: if the SavedModel cannot be read.
        """
        from models.lstm import keras

        return keras().models.load_model(str(self.path))


def _int_dirs(model_dir: Path) -> list[tuple[int, Path]]:
    if not model_dir.is_dir():
        return []
    out = []
    for child in model_dir.iterdir():
        if child.is_dir() and child.name.isdigit():
            out.append((int(child.name), child))
    return sorted(out)


def _read(model_dir: Path, version: int, path: Path) -> ModelVersion:
    meta = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
    return ModelVersion(str(meta.get("model_name") or model_dir.name), str(version), path, meta)


def list_versions(model_dir: str | Path) -> list[ModelVersion]:
    """All complete versions (integer directories holding the metadata file), oldest first.

    Args:
        model_dir: the model family's directory (``Settings().model_dir``); may not exist yet.

    Returns:
        The versions in increasing version order; empty if there are none.

    Raises:
        ValueError: if a metadata file is not valid JSON.
    """
    model_dir = Path(model_dir)
    return [_read(model_dir, v, p) for v, p in _int_dirs(model_dir)
            if (p / METADATA_FILE).is_file()]


def latest_version(model_dir: str | Path) -> ModelVersion:
    """The highest complete version.

    Raises:
        FileNotFoundError: if ``model_dir`` has no complete version yet.
    """
    versions = list_versions(model_dir)
    if not versions:
        raise FileNotFoundError(
            f"no trained model in {model_dir}: run `miraikakaku train` (or "
            "`python -m models.training`) first")
    return versions[-1]


def next_version(model_dir: str | Path) -> int:
    """The version number a new model gets: 1 + the highest integer directory (complete or not)."""
    dirs = _int_dirs(Path(model_dir))
    return dirs[-1][0] + 1 if dirs else 1


def _serving_signature(model):
    import tensorflow as tf

    inp = model.inputs[0]
    out_name = model.output_names[0]

    @tf.function(input_signature=[tf.TensorSpec(inp.shape, inp.dtype, name=inp.name.split(":")[0])])
    def serve(windows):
        return {out_name: model(windows, training=False)}

    return serve


def save_version(model, model_dir: str | Path, metadata: Mapping[str, Any]) -> ModelVersion:
    """Save ``model`` as the next version, atomically.

    The SavedModel is written with ``model.save(path, save_format="tf")`` plus an explicit
    ``serving_default`` signature (``windows`` → ``predicted_log_return``); per-layer call traces
    are not saved (``save_traces=False``: 10x faster and ~5x smaller), so loading rebuilds the
    model from its config, which works because it only uses built-in Keras layers.

    Args:
        model: a built ``tf_keras.Model`` with one input and one output.
        model_dir: the model family's directory (created if missing).
        metadata: JSON-serializable facts about the model (see ``models.training.train``);
            ``version`` and ``created_at`` (UTC, ISO 8601) are set here, ``model_name``
            defaults to the directory's name.

    Returns:
        The new version.

    Raises:
        TypeError: if ``metadata`` is not JSON-serializable.
        OSError: if the directory cannot be written.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=model_dir))
    try:
        model.save(str(tmp), save_format="tf", save_traces=False,
                   signatures={"serving_default": _serving_signature(model)})
        return _commit(tmp, model_dir, metadata)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _commit(tmp: Path, model_dir: Path, metadata: Mapping[str, Any]) -> ModelVersion:
    """Write the metadata into ``tmp`` and rename it to the next free version directory."""
    version = next_version(model_dir)
    while True:
        meta = dict(metadata)
        meta.setdefault("model_name", model_dir.name)
        meta["version"] = str(version)
        meta["created_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n",
                                         encoding="utf-8")
        final = model_dir / str(version)
        if final.exists():  # another trainer took this number meanwhile
            version = max(version + 1, next_version(model_dir))
            continue
        try:
            os.rename(tmp, final)
        except OSError:
            if final.exists():
                version = max(version + 1, next_version(model_dir))
                continue
            raise
        return ModelVersion(str(meta["model_name"]), str(version), final, meta)


def publish_version(saved_model_dir: str | Path, model_dir: str | Path,
                    metadata: Mapping[str, Any]) -> ModelVersion:
    """Copy an exported SavedModel directory in as the next version, atomically.

    Used by the TFX pipeline's registry Pusher (``tfx_pipelines.registry_pusher``): the Trainer
    already exported the model; this copies it (all files, ``saved_model.pb`` included) into a
    hidden temporary directory, writes ``metadata`` as in ``save_version`` (replacing any
    metadata file that came with the copy) and renames it into place.

    Args:
        saved_model_dir: a SavedModel directory (must contain ``saved_model.pb``).
        model_dir: the model family's directory (created if missing).
        metadata: JSON-serializable facts; ``version`` and ``created_at`` are set here.

    Returns:
        The new version.

    Raises:
        FileNotFoundError: if ``saved_model_dir`` has no ``saved_model.pb``.
        TypeError: if ``metadata`` is not JSON-serializable.
        OSError: if the directory cannot be written.
    """
    src = Path(saved_model_dir)
    if not (src / "saved_model.pb").is_file():
        raise FileNotFoundError(f"{src} is not a SavedModel directory (no saved_model.pb)")
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=model_dir))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        return _commit(tmp, model_dir, metadata)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

if __name__ == "__main__":  # pragma: no cover - manual inspection
    from miraikakaku.settings import Settings

    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Settings().model_dir
    for v in list_versions(root):
        m = v.metadata.get("validation_metrics", {})
        print(v.version, v.metadata.get("created_at"), v.path,
              {k: m[k] for k in ("rmse", "zero_baseline_rmse", "directional_accuracy") if k in m})
