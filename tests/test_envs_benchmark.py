"""Smoke test of benchmarks/throughput.py: every measured cell is positive and lands in the report."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmarks import throughput


def test_benchmark_measures_and_reports(tmp_path: Path) -> None:
    config = throughput.BenchmarkConfig("bsn/DelayedParity-v0", (8,), seconds=0.01, min_steps=2, warmup_steps=1)
    methods = ["gym_bsn_collect", "torch_cpu_bsn_collect", "torch_cuda_bsn_collect"]
    results = throughput.run_benchmark(methods, [1, 4], config, log=lambda _: None, repeats=2)
    for name in ["gym_bsn_collect", "torch_cpu_bsn_collect"]:
        assert all(value is not None and value > 0 and math.isfinite(value) for value in results[name].values())
    report = tmp_path / "throughput.md"
    throughput.write_markdown(report, results, [1, 4], config, "python benchmarks/throughput.py --test")
    throughput.write_plot(tmp_path / "throughput.png", results, config)
    text = report.read_text()
    assert "`python benchmarks/throughput.py --test`" in text
    assert text.count("\n| 1 |") == 1 and text.count("\n| 4 |") == 1
    assert (tmp_path / "throughput.png").stat().st_size > 0


def test_benchmark_rejects_unknown_env() -> None:
    with pytest.raises(ValueError, match="did you mean 'CartPole-v1'"):
        throughput.parse_args(["--env", "CartPol-v1"])
