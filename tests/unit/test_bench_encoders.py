"""`streamrec bench encoders` on tiny sizes: every measurement is there, with positive figures (no timing limits)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from encoders.models.gru import RecurrentConfig
from stream.bench.encoders import StepInputs, bench_recurrent
from stream.cli import main
from stream.tools.datasets import load_events


@pytest.mark.parametrize("cell", ["gru", "lstm", "sasrec"])
def test_bench_recurrent_rows(cell: str, data_dir: Path) -> None:
    events = load_events("movielens", data_dir)[-40:]
    inputs = StepInputs(events, RecurrentConfig(n_items=100))
    assert len(inputs) == 40 and inputs.tokens.shape == (40, 8)
    rows = bench_recurrent(cell, inputs, batch=16, n_items=100)
    # SASRec is served by numpy only; a recurrent model's text-free events step from tabled input gates
    torch_row = [] if cell == "sasrec" else [("numpy_tabled_gates", 1, 40), ("torch", 1, 40)]
    assert [(r["impl"], r["batch"], r["events"]) for r in rows] == [("numpy", 1, 40), ("numpy", 16, 48),
                                                                    *torch_row]
    for r in rows:
        assert r["bench"] == "encoders" and r["model"] == cell
        assert r["us_per_event"] > 0 and r["wall_us_per_event"] > 0
    assert ("target_met" in rows[1]) == (cell != "lstm")


def test_cli_prints_one_json_line_per_measurement(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--data-dir", str(data_dir), "bench", "encoders", "--events", "30", "--batch", "8",
                 "--queries", "6"])
    assert code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(r["bench"] == "encoders" for r in rows)
    recurrent = [(r["model"], r["impl"], r["batch"]) for r in rows if r["model"] != "text"]
    assert recurrent == [(m, impl, b) for m in ("gru", "lstm") for impl, b in (
        ("numpy", 1), ("numpy", 8), ("numpy_tabled_gates", 1), ("torch", 1))] + [
        ("sasrec", "numpy", 1), ("sasrec", "numpy", 8)]
    text = {r["mode"]: r for r in rows if r["model"] == "text"}
    assert list(text) == ["load", "batched", "single_uncached", "single_cached"]
    assert text["load"]["seconds"] > 0
    for mode in ("batched", "single_uncached", "single_cached"):
        assert text[mode]["queries_per_s"] > 0 and text[mode]["queries_per_cpu_s"] > 0
    assert text["single_cached"]["queries"] == 60
    assert (text["single_cached"]["cache_hits"], text["single_cached"]["cache_misses"]) == (60, 6)
