"""Shared helpers of the benchmark scripts: machine description, timing, markdown tables."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax

from jaxeit.machine import cpu_model

RESULTS = Path(__file__).resolve().parent / "results"


def machine_header(title: str) -> str:
    """Markdown preamble: title, date, machine, devices and package versions."""
    versions = []
    for pkg in ("jaxeit", "jax", "jaxlib", "numpy", "scipy", "flax", "optax", "pyeit"):
        try:
            versions.append(f"{pkg} {importlib.metadata.version(pkg)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    devices = ", ".join(f"{d.platform}:{d.device_kind}" for d in jax.devices())
    return "\n".join([
        f"# {title}",
        "",
        f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"- machine: {cpu_model()}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}; "
        f"load average {os.getloadavg()[0]:.1f} when written (timings under a load above the core count "
        "include waiting for other jobs)",
        f"- python: {sys.version.split()[0]}; devices: {devices}",
        f"- versions: {', '.join(versions)}",
        f"- command: `python {' '.join(sys.argv)}`",
        "",
    ])


def median_time(fn, *, repeats: int = 5, warmup: int = 1, args_for=None) -> float:
    """Median wall time (s) of ``fn(*args_for(i))`` over ``repeats`` calls after ``warmup`` calls.

    ``args_for(i)`` gives fresh arguments per call so no cache can serve a repeat.
    """
    args_for = args_for or (lambda i: ())
    for i in range(warmup):
        jax.block_until_ready(fn(*args_for(-1 - i)))
    times = []
    for i in range(repeats):
        a = args_for(i)
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*a))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def markdown_table(header: list[str], rows: list[list]) -> str:
    def fmt(x):
        if isinstance(x, float):
            return f"{x:.4g}"
        return str(x)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)
