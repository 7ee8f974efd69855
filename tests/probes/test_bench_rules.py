"""bench/probes.py's decision rules, on made-up runs: what counts as a
tested rate, the strict lossless rule within a sweep, and the in-memory
drain of both loops (it must deliver every sample, or its timing means
nothing)."""

from __future__ import annotations

import importlib.util
import pathlib

_path = pathlib.Path(__file__).resolve().parents[2] / "bench" / "probes.py"
_spec = importlib.util.spec_from_file_location("ktap_bench_probes", _path)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _run(rate: int, achieved: float, lost: int = 0) -> dict:
    return {"rate": rate, "achieved": achieved, "lost": lost}


def test_a_rate_counts_only_when_both_runs_reached_it():
    runs = {"baseline": [_run(500, 500), _run(1000, 1000), _run(2000, 1100)],
            "probes": [_run(500, 500), _run(1000, 850), _run(2000, 1900)]}
    assert bench.tested_rates(runs) == {500}  # 1000: probes' run fell behind; 2000: baseline's


def test_lossless_rate_is_strict_within_a_sweep():
    tested = {250, 500, 1000, 2000}
    assert bench.lossless_rate([_run(250, 250), _run(500, 500), _run(1000, 1000)], tested) == 1000
    # one loss at a low rate caps the sweep, whatever passed above it
    assert bench.lossless_rate([_run(250, 250), _run(500, 500, lost=3), _run(1000, 1000)],
                               tested) == 250
    # an untested rate neither counts nor breaks the chain; a lossy one breaks it
    assert bench.lossless_rate([_run(500, 500), _run(1000, 700), _run(2000, 2000)],
                               {500, 2000}) == 2000
    assert bench.lossless_rate([_run(500, 500), _run(1000, 700, lost=1), _run(2000, 2000)],
                               {500, 2000}) == 500
    assert bench.lossless_rate([_run(250, 250, lost=1)], tested) == 0


def test_in_memory_drain_delivers_every_sample_in_both_loops():
    costs = bench.in_memory_ns_per_event(rounds=2, batch=3000)  # raises if one falls short
    assert set(costs) == {"baseline", "probes"} and all(c > 0 for c in costs.values())
