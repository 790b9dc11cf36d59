"""`tfsctl monitor drift` speed: 1M logged rows against a baseline, beside numpy written plainly.

Writes real PredictionLog TFRecord files (TF's writer, so CRCs are valid) the way the server's
payload log does: a 4-float `features` input and a 3-class softmax-like `output_0` per row, in
files of about 16 MB, in two layouts: one row per record (1M records) and 10 rows per record.
Then times, in one run:

- ours: `drift.load_window` (records parsed once, tensor bytes joined per tensor, files split over
  the CPUs) + `drift.drift` (quantile bins, PSI and Jensen-Shannon per feature);
- reference: the plain way, `payload.read_logs` + `record_dict` per record, numpy arrays from the
  lists, `np.histogram` on the baseline's bin edges and the PSI / JS formulas in numpy (on the
  first --ref-rows rows: at its speed a full million takes minutes; rows/s is compared).

Both must give the same PSI on the rows they share (checked). Prints the load average: the
machine is shared, so the numbers are what this run saw.

    .venv/bin/python bench/drift.py [--rows 1000000] [--ref-rows 100000] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from orchestrator.monitor import drift  # noqa: E402
from orchestrator.monitor.payload import read_logs, record_dict  # noqa: E402

FILE_ROWS = 120_000


def write_logs(prefix: Path, rows: int, per_record: int, seed: int) -> int:
    import tensorflow as tf

    from orchestrator.protocol.tensors import to_tensor_proto
    from orchestrator.protos import prediction_log_pb2

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4)).astype(np.float32)
    x[:, 0] += 0.5  # drift on one feature, so the numbers are not all zero
    logits = x[:, :3]
    y = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
    start = int(time.time()) - 3600
    records = 0
    writer = None
    for i in range(0, rows, per_record):
        if i % FILE_ROWS == 0:
            if writer is not None:
                writer.close()
            writer = tf.io.TFRecordWriter(f"{prefix}-{start * 1000 + i}.tfrecord")
        pl = prediction_log_pb2.PredictionLog()
        md = pl.log_metadata
        md.model_spec.name = "bench"
        md.model_spec.version.value = 1
        md.model_spec.signature_name = "serving_default"
        md.timestamp_secs = start + i * 3000 // rows
        md.request_origin = f"req-{i:08d}"
        pl.predict_log.request.inputs["features"].CopyFrom(to_tensor_proto(x[i:i + per_record]))
        pl.predict_log.response.outputs["output_0"].CopyFrom(to_tensor_proto(y[i:i + per_record]))
        assert writer is not None
        writer.write(pl.SerializeToString())
        records += 1
    if writer is not None:
        writer.close()
    return records


def baseline(seed: int) -> drift.Baseline:
    rng = np.random.default_rng(seed + 1)
    x = rng.normal(size=(20_000, 4)).astype(np.float32)
    logits = x[:, :3]
    y = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return drift.build_baseline("bench", "bench", {"features": x}, {"output_0": y})


def ours(prefix: str, base: drift.Baseline, workers: int) -> tuple[float, int, dict[str, float]]:
    t0 = time.perf_counter()
    window = drift.load_window(prefix, workers=workers)
    result = drift.drift(base, window.columns[1])
    return time.perf_counter() - t0, window.rows[1], {d.feature: d.psi for d in result}


def reference(prefix: str, base: drift.Baseline, limit: int) -> tuple[float, int, dict[str, float]]:
    """The plain way: dicts per record, lists, numpy per feature."""
    t0 = time.perf_counter()
    feats: list[list[float]] = []
    outs: list[list[float]] = []
    for rec in read_logs(prefix):
        d = record_dict(rec)
        feats.extend(d["inputs"]["features"])
        outs.extend(d["outputs"]["output_0"])
        if len(feats) >= limit:
            break
    x = np.array(feats[:limit])
    y = np.array(outs[:limit])
    cols = {f"features[{i}]": x[:, i] for i in range(4)}
    cols |= {f"output_0[{i}]": y[:, i] for i in range(3)}
    cols["output_0:class"] = y.argmax(axis=1)
    psis = {}
    for ref in base.features:
        values = cols[ref.name]
        if ref.kind == "numeric":
            edges = np.concatenate([[-np.inf], ref.edges, [np.inf]])
            counts, _ = np.histogram(values, bins=edges)
            # np.histogram's bins are [a, b); ours are (a, b]: same counts for continuous data.
        else:
            counts = np.array([np.sum(values.astype(str) == c) for c in ref.categories]
                              + [np.sum(~np.isin(values.astype(str), ref.categories))])
        a = np.maximum(counts / len(values), drift.EPS)
        e = np.maximum(np.array(ref.probs), drift.EPS)
        psis[ref.name] = float(np.sum((a - e) * np.log(a / e)))
        m = (a / a.sum() + e / e.sum()) / 2
        _js = np.sqrt(0.5 * np.sum(a / a.sum() * np.log2(a / a.sum() / m))
                      + 0.5 * np.sum(e / e.sum() * np.log2(e / e.sum() / m)))
    return time.perf_counter() - t0, len(x), psis


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--ref-rows", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    args = ap.parse_args()
    base = baseline(0)
    print(f"# monitor drift over {args.rows:,} logged rows; load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}; {os.cpu_count()} CPUs, "
          f"--workers {args.workers}")
    print("| layout | records | MB | ours s | ours rows/s | reference rows/s | ratio | goal < 10 s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for per_record in (1, 10):
        with tempfile.TemporaryDirectory(prefix="tfso-drift-bench-") as tmp:
            prefix = str(Path(tmp) / "bench")
            records = write_logs(Path(prefix), args.rows, per_record, seed=per_record)
            mb = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 1e6
            secs, rows, psis = ours(prefix, base, args.workers)
            ref_secs, ref_rows, ref_psis = reference(prefix, base, args.ref_rows)
            # Same numbers on shared rows: check on a window of ref_rows with ours too.
            first = drift.read_window(rec for rec in read_logs(prefix))
            sub = {k: v[:ref_rows] for k, v in first.columns[1].items()}
            check = {d.feature: d.psi for d in drift.drift(base, sub)}
            for k, v in ref_psis.items():
                assert abs(check[k] - v) < 1e-9, (k, check[k], v)
            assert rows == args.rows, rows
            rate, ref_rate = rows / secs, ref_rows / ref_secs
            print(f"| {per_record} row/record | {records:,} | {mb:.0f} | {secs:.2f} | {rate:,.0f} | "
                  f"{ref_rate:,.0f} | {rate / ref_rate:.1f}x | {'met' if secs < 10 else 'NOT met'} |",
                  flush=True)
            print(f"#   worst PSI {max(psis.values()):.3f} ({max(psis, key=psis.__getitem__)})")
    print(f"# load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
