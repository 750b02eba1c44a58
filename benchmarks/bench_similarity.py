"""Time pairwise_fitted_ssim on the two audit workloads and print median seconds and pairs/s.

The inputs are synthetic: uniform random float32 tensors of the audited sizes. Run time does not
depend on pixel values, but a machine shared with other jobs inflates single runs, so the median
of several repeats is reported.

Usage:
    PYTHONPATH=. python benchmarks/bench_similarity.py [--repeats 3] [--threads N] [--chunk-size N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from lakeguard.metrics.image import pairwise_fitted_ssim

WORKLOADS = [
    # (label, outputs P, references R, channels C); all images are 28x28.
    ("synthetic RGB, 1,500 x 1,080 (RetinaMNIST train size)", 1500, 1080, 3),
    ("synthetic grey, 200 x 4,708 (PneumoniaMNIST train size)", 200, 4708, 1),
]


def cpu_name() -> str:
    """Model name of the CPU from /proc/cpuinfo, or platform.processor() elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def time_workload(num_outputs: int, num_references: int, channels: int, repeats: int,
                  chunk_size: int | None, seed: int) -> list[float]:
    """Seconds of each of `repeats` calls of pairwise_fitted_ssim on fresh random inputs."""
    generator = torch.Generator().manual_seed(seed)
    outputs = torch.rand(num_outputs, channels, 28, 28, generator=generator)
    references = torch.rand(num_references, channels, 28, 28, generator=generator)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        pairwise_fitted_ssim(outputs, references, chunk_size=chunk_size)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per workload")
    parser.add_argument("--threads", type=int, help="torch intra-op threads; torch's default when absent")
    parser.add_argument("--chunk-size", type=int, help="pairs per block; the library default when absent")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, {os.cpu_count()} CPUs: {cpu_name()}")
    print(f"chunk_size={args.chunk_size}, {args.repeats} repeats, float32")
    for label, num_outputs, num_references, channels in WORKLOADS:
        seconds = time_workload(
            num_outputs, num_references, channels, args.repeats, args.chunk_size, args.seed
        )
        median = statistics.median(seconds)
        pairs = num_outputs * num_references
        runs = ", ".join(f"{value:.2f}" for value in seconds)
        print(f"{label}: median {median:.2f} s, {pairs / median:,.0f} pairs/s (runs: {runs} s)")


if __name__ == "__main__":
    main()
