"""Time the default ``lakeguard run`` end to end and report each step's duration and peak memory.

Runs the job that ``scripts/demo.sh`` runs (real RetinaMNIST, transpose-attacked MLP, LWLRD, gate,
publish) into a temporary run folder and registry, then prints wall time, the durations that each
step recorded, and the largest resident set of any child process (``ru_maxrss`` of the children).
Extra arguments are passed to ``lakeguard run`` as overrides.

Usage:
    python benchmarks/bench_default_run.py [OVERRIDES...]
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="lakeguard-bench-"))
    command = [
        sys.executable, "-m", "lakeguard.cli", "run",
        "--run-dir", str(work / "run"), f"registry.root={work / 'registry'}", *sys.argv[1:],
    ]
    started = time.perf_counter()
    completed = subprocess.run(command, check=False)
    wall = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    summary_path = work / "run" / "summary.json"
    if completed.returncode != 0 or not summary_path.is_file():
        print(f"lakeguard run failed with exit code {completed.returncode}; see {work}", file=sys.stderr)
        return 1
    summary = json.loads(summary_path.read_text())
    report = {
        "cpu_count": os.cpu_count(),
        "wall_seconds": round(wall, 1),
        "peak_child_rss_mib": round(peak_kib / 1024, 1),
        "step_seconds": {k: round(v, 1) for k, v in summary["durations_seconds"].items() if v is not None},
        "gate": summary["gate"],
        "leakage": summary["leakage"],
        "utility": summary["utility"],
        "published": summary["published"] is not None,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
