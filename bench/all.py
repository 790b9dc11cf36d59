"""`make bench`: every bench in turn, each printing its own table, then ONE table of every ratio.

Each bench adds its headline ratios to the file named by BENCH_SUMMARY (bench/_common.summary);
this prints them together with the load average before and after, so the numbers of one run sit
side by side.

    .venv/bin/python bench/all.py [bench/ceiling.py bench/workers.py ...]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHES = [
    "bench/ceiling.py", "bench/fastpath.py", "bench/fastpath.py --batching 32,0,1", "bench/cpu.py --scrape", "bench/scrape.py", "bench/workers.py",
    "bench/cnn_batching.py",
    "bench/serve_rest.py",
    "bench/metrics.py", "bench/payload_log.py", "bench/client.py", "bench/deploy.py",
    "bench/router.py", "bench/capture.py",
]  # fmt: skip


def main() -> int:
    benches = sys.argv[1:] or BENCHES
    load_start = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    failed = []
    with tempfile.TemporaryDirectory(prefix="bench-all-") as tmp:
        summary = Path(tmp) / "summary.jsonl"
        summary.touch()
        for bench in benches:
            print(f"== {bench}", flush=True)
            env = {**os.environ, "BENCH_SUMMARY": str(summary)}
            argv = [sys.executable, *bench.split()]  # a bench may carry its options
            if subprocess.run(argv, cwd=ROOT, env=env, check=False).returncode:
                failed.append(bench)
        rows = [json.loads(line) for line in summary.read_text().splitlines() if line]
    load_end = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"\n== all benches: one run, {os.cpu_count()} CPUs, load average {load_start} at the "
          f"start, {load_end} at the end\n")  # fmt: skip
    print("| bench | measure | value | goal |")
    print("| --- | --- | ---: | --- |")
    for r in rows:
        value = f"{r['value']:.2f}{r['unit']}"
        print(f"| {r['bench']} | {r['measure']} | {value} | {r['goal']} |")
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
