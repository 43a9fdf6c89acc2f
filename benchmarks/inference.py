"""Benchmark: Beam RunInference predictions/s against calling the model directly, same batches.

Set-up (inside the run, in a temporary data dir): the first ``--tickers`` symbols of the real
S&P 500 five-year file; a small LSTM trained on them with ``models.training.train`` (1 epoch,
at most 2,000 examples: the weights do not matter for speed, the architecture is the default
one, 32 units over ``[20, 8]`` windows) and saved by ``models.registry`` as a SavedModel; the real
feature windows of those symbols from ``models.training.build_examples`` (the stream's own
sequencing code) saved to an ``.npy``.

For each batch size b in 1, 32, 256 (RunInference ``min_batch_size = max_batch_size = b``):

* **RunInference**: ``beam.Create`` of a few (start, stop) chunk bounds → a DoFn that reads the
  windows from the ``.npy`` (memory-mapped) and yields ``(index, window)`` →
  ``RunInference(KeyedModelHandler(TFModelHandlerNumpy(model_uri)))`` (the handler
  ``transforms.inference.PredictNextReturn`` uses for the local model) → count; DirectRunner
  with the options ``pipelines.prices.run`` uses. Time = ``p.run()`` to finish; the model load
  (Beam's ``load_model_latency_milli_secs``) is reported and taken out of the compared rate, since
  direct calls use an already loaded model.
  It runs twice: with ``inference_fn=transforms.inference.numpy_inference_fn`` (what
  ``PredictNextReturn`` uses; the compared rate) and with Beam's default inference function
  (which slices the output tensor row by row), as the before/after of that fix.
* **direct**: the same model loaded once with ``tf.keras.models.load_model`` and called on the
  same windows in consecutive slices of b, as ``model(batch)`` (what ``TFModelHandlerNumpy``
  calls) and as ``model.predict_on_batch(batch)``; the faster one is the reference.

A warm-up pipeline first (one-off set-up); then per batch size: direct, RunInference (Beam's
default fn), RunInference (ours), direct again (best of the two directs).
Goal: RunInference ≥ 80 % of direct at batch 256.

Run: ``flock /tmp/bench.lock .venv/bin/python -m benchmarks.inference [--quick]
[--tickers 40]``. Writes ``benchmarks/results/inference.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import apache_beam as beam

from benchmarks._output import now_iso, write_results
from benchmarks.pipeline_throughput import write_subset

NAME = "inference"
CHUNK = 1024


class _ReadWindowsFn(beam.DoFn):
    """``(start, stop)`` → ``(index, float32 [N, F] window)`` read from an ``.npy`` file."""

    def __init__(self, path: str) -> None:
        self._path = path

    def setup(self) -> None:
        import numpy as np

        self._x = np.load(self._path, mmap_mode="r")

    def process(self, bounds: tuple[int, int]):
        import numpy as np

        start, stop = bounds
        block = np.array(self._x[start:stop])  # one read per chunk, then plain arrays
        for i in range(stop - start):
            yield start + i, block[i]


def run_inference_pipeline(npy: str, n: int, model_uri: str, batch: int,
                           ours: bool = True) -> dict:
    """RunInference over the first ``n`` windows of ``npy`` at a fixed batch size.

    ``ours``: the handler as ``PredictNextReturn`` builds it (``inference_fn=
    transforms.inference.numpy_inference_fn``); False: Beam's default inference function.

    Returns:
        ``{"predictions", "seconds", "load_seconds"}`` (wall time of the pipeline, and Beam's
        model-load latency metric).
    """
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
    from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerNumpy
    from apache_beam.options.pipeline_options import PipelineOptions

    chunks = [(s, min(s + CHUNK, n)) for s in range(0, n, CHUNK)]
    from transforms.inference import numpy_inference_fn

    extra = {"inference_fn": numpy_inference_fn} if ours else {}
    handler = KeyedModelHandler(TFModelHandlerNumpy(model_uri=model_uri, min_batch_size=batch,
                                                    max_batch_size=batch, **extra))
    opts = PipelineOptions([], direct_num_workers=1, direct_running_mode="in_memory")
    p = beam.Pipeline(options=opts)
    _ = (p | "Chunks" >> beam.Create(chunks)
         | "ReadWindows" >> beam.ParDo(_ReadWindowsFn(npy))
         | "RunInference" >> RunInference(handler)
         | "Count" >> beam.combiners.Count.Globally())
    t0 = time.perf_counter()
    result = p.run()
    result.wait_until_finish()
    seconds = time.perf_counter() - t0
    predictions, load_ms = 0, 0.0
    metrics = result.metrics().query()
    for c in metrics["counters"]:
        if c.key.metric.name == "num_inferences":
            predictions += int(c.committed or c.attempted or 0)
    for d in metrics["distributions"]:
        if d.key.metric.name == "load_model_latency_milli_secs":
            r = d.committed or d.attempted
            if r is not None and r.count:
                load_ms += r.sum
    return {"predictions": predictions, "seconds": seconds, "load_seconds": load_ms / 1000}


def run_direct(model, x, batch: int, method: str) -> dict:
    """Call the loaded model on consecutive slices of ``batch`` windows of ``x``."""
    call = model.predict_on_batch if method == "predict_on_batch" else \
        (lambda b: model(b))
    n = 0
    t0 = time.perf_counter()
    for s in range(0, len(x), batch):
        out = call(x[s:s + batch])
        n += len(out)
    return {"predictions": n, "seconds": time.perf_counter() - t0}


def _rate(r: dict, minus_load: bool = False) -> float:
    sec = r["seconds"] - (r.get("load_seconds", 0.0) if minus_load else 0.0)
    return r["predictions"] / sec if sec > 0 else 0.0


def main(argv: Iterable[str] | None = None) -> int:
    """Run the benchmark; see the module docstring."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 tickers, few windows (seconds)")
    parser.add_argument("--tickers", type=int, default=40,
                        help="first N symbols of the S&P 500 file (~1,219 windows each)")
    parser.add_argument("--batch_sizes", default="1,32,256")
    args = parser.parse_args(list(argv) if argv is not None else None)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    if args.quick:
        args.tickers = 3
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    per_size = ({1: 100, 32: 640, 256: 1024} if args.quick
                else {1: 2000, 32: 10240, 256: 1 << 30})
    started = now_iso()
    import numpy as np

    from miraikakaku.settings import Settings
    from models.training import build_examples, train

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="mk-bench-inf-") as tmp:
        work = Path(tmp)
        csv_path = work / f"sp500_first{args.tickers}.csv"
        info = write_subset(csv_path, args.tickers)
        settings = Settings(data_dir=work)
        t0 = time.perf_counter()
        mv = train([csv_path], settings=settings, epochs=1, max_train_examples=2000,
                   progress=False)
        train_s = time.perf_counter() - t0
        examples = build_examples([csv_path], list(settings.source_priority),
                                  int(mv.metadata.get("window", 20)))
        x_all = np.ascontiguousarray(examples.x, dtype=np.float32)
        npy = work / "windows.npy"
        np.save(npy, x_all)
        print(f"{len(x_all)} real windows {x_all.shape[1:]} from {info['rows']} bars; model "
              f"trained in {train_s:.1f} s → {mv.path}", file=sys.stderr)
        from models.lstm import keras

        model = keras().models.load_model(str(mv.path))
        model(x_all[:1])  # build the eager call path once
        model.predict_on_batch(x_all[:1])
        run_inference_pipeline(str(npy), 64, str(mv.path), 32)  # warm-up: one-off set-up
        for b in sizes:
            n = min(per_size.get(b, 10 * b), len(x_all))
            n -= n % b or 0
            x = x_all[:n]
            directs = {"model(batch)": [], "predict_on_batch": []}
            for m in directs:
                directs[m].append(run_direct(model, x, b, m))
            beam_default = run_inference_pipeline(str(npy), n, str(mv.path), b, ours=False)
            ri = run_inference_pipeline(str(npy), n, str(mv.path), b)
            for m in directs:
                directs[m].append(run_direct(model, x, b, m))
            best = {m: max(v, key=_rate) for m, v in directs.items()}
            ref_name = max(best, key=lambda m: _rate(best[m]))
            ref = _rate(best[ref_name])
            ri_rate = _rate(ri, minus_load=True)
            row = {"batch_size": b, "windows": n,
                   "runinference_per_s": round(ri_rate, 1),
                   "runinference_beam_default_fn_per_s": round(
                       _rate(beam_default, minus_load=True), 1),
                   "runinference_wall_per_s": round(_rate(ri), 1),
                   "runinference_seconds": round(ri["seconds"], 2),
                   "model_load_seconds": round(ri["load_seconds"], 2),
                   "direct_model_call_per_s": round(_rate(best["model(batch)"]), 1),
                   "direct_predict_on_batch_per_s": round(_rate(best["predict_on_batch"]), 1),
                   "reference": ref_name,
                   "ratio_vs_direct": round(ri_rate / ref, 3) if ref else None,
                   "ratio_wall_vs_direct": round(_rate(ri) / ref, 3) if ref else None,
                   "ratio_beam_default_fn_vs_direct": round(
                       _rate(beam_default, minus_load=True) / ref, 3) if ref else None}
            if ri["predictions"] != n:
                row["note"] = f"RunInference counted {ri['predictions']} of {n}"
            rows.append(row)
            print(row, file=sys.stderr)
    at256 = next((r for r in rows if r["batch_size"] == 256), None)
    goals = []
    if at256:
        ref256 = at256["direct_predict_on_batch_per_s"]
        goals.append({
            "goal": "RunInference >= 80 % of direct model calls at batch 256", "target": 0.8,
            "measured": at256["ratio_vs_direct"], "met": (at256["ratio_vs_direct"] or 0) >= 0.8,
            "note": f"{at256['runinference_per_s']:,} vs {at256['reference']} "
                    f"{max(at256['direct_model_call_per_s'], ref256):,} "
                    f"predictions/s over {at256['windows']} windows; model load "
                    f"({at256['model_load_seconds']} s) excluded; with it, "
                    f"{at256['ratio_wall_vs_direct']}"})
    notes = [
        f"windows: {len(x_all)} real [20, 8] windows of the first {args.tickers} S&P 500 "
        "symbols (models.training.build_examples), read in the pipeline from an .npy",
        "model: default LSTM (32 units) trained 1 epoch on <= 2,000 of those examples "
        "(models.training.train), SavedModel via models.registry",
        "RunInference rate excludes Beam's model load (load_model_latency_milli_secs); "
        "runinference_wall_per_s includes it and the pipeline's start-up",
        "DirectRunner (FnApiRunner, in_memory, 1 worker), TensorFlow CPU, both in one process",
    ]
    write_results(NAME, started, rows, goals, notes, args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
