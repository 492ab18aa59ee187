"""The pure parts of `streamrec bench pipeline` and `bench state`: the load's events, the ramp's verdicts'
inputs, the profile summary and the state replay (no broker, no timing limits)."""

from __future__ import annotations

import gc
import os
import threading
import time
from pathlib import Path

import pytest

from encoders.training.events import DatasetEvent
from stream.bench.loadgen import templates
from stream.bench.pipeline import (
    _cpu_at_common_rate,
    _stage_means_us,
    collector_paused,
    context_switches,
    cpu_seconds,
    machine_busy_seconds,
)
from stream.bench.profiling import top_frames
from stream.bench.state import memory_bytes, rocksdb_bytes, user_histories
from stream.core.schemas import Source, decode_event
from stream.tools.datasets import load_events


def _some_events(data_dir: Path) -> list[DatasetEvent]:
    """Interactions and tag searches of movielens (the tags come late in its time order)."""
    events = load_events("movielens", data_dir)
    return [e for e in events if e.type != "search"][:3000] + [e for e in events if e.type == "search"][:300]


def test_templates_are_valid_events_with_the_asked_search_share(data_dir: Path) -> None:
    events = _some_events(data_dir)
    made = templates(events, 4000, users=50, search_share=0.1)
    searches = sum(t.type == "search" for t in made)
    assert 300 < searches < 500
    assert {t.key for t in made} <= {f"u{n}".encode() for n in range(50)}
    for n, t in enumerate(made[:200]):
        raw = t.head + f'run-{n}","ts":1700000000.5}}'.encode()
        event = decode_event(t.type, raw, Source("x", 0, n), now=1_700_000_000.0)
        assert event.user_id.encode() == t.key and event.event_id == f"run-{n}" and event.ts == 1_700_000_000.5
        assert (event.query is not None) == (t.type == "search")


def test_more_users_than_the_dataset_get_rotated_real_histories(data_dir: Path) -> None:
    events = load_events("movielens", data_dir)[:3000]
    real = len({e.user_id for e in events})
    histories = user_histories(events, real + 3)
    assert len(histories) == real + 3
    assert sorted(histories[f"u{real}"], key=id) == sorted(histories["u0"], key=id)  # same events
    assert histories[f"u{real}"] != histories["u0"] or len(histories["u0"]) == 1  # in another order


def test_store_sizes_are_measured() -> None:
    states = {f"u{n}": bytes(range(200)) * 3 for n in range(100)}
    assert memory_bytes(states) / 100 >= 600
    assert 0 < rocksdb_bytes(states) / 100 < 700


def test_cpu_seconds_of_this_process() -> None:
    assert cpu_seconds(os.getpid()) > 0


def test_context_switches_count_a_threads_wake_ups_and_busy_seconds_grow() -> None:
    before, busy0 = context_switches(os.getpid()), machine_busy_seconds()
    slept, done = threading.Event(), threading.Event()

    def sleeper() -> None:
        for _ in range(50):
            time.sleep(0.001)
        slept.set()
        done.wait()  # alive while counted: an ended thread leaves /proc/<pid>/task

    thread = threading.Thread(target=sleeper)
    thread.start()
    slept.wait()
    assert context_switches(os.getpid()) - before >= 50  # the thread slept and woke 50 times
    done.set()
    thread.join()
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:  # 50 ms of CPU in this process
        pass
    assert machine_busy_seconds() - busy0 >= 0.03  # the machine's clock ticks every 10 ms


def test_stage_means_and_common_rate() -> None:
    before = {"search": [1.0, 1000.0]}
    after = {"search": [1.5, 2000.0], "decode": [0.02, 1000.0]}
    assert _stage_means_us(before, after) == {"search": 500.0, "decode": 20.0}
    steps = {"worker": [{"rate": 250.0, "cpu_s_per_1k_events": 2.0, "passed": True},
                        {"rate": 500.0, "cpu_s_per_1k_events": 1.0, "passed": False}],
             "faust": [{"rate": 250.0, "cpu_s_per_1k_events": 1.5, "passed": True},
                       {"rate": 500.0, "cpu_s_per_1k_events": 0.8, "passed": True}]}
    assert _cpu_at_common_rate(steps, "worker", "faust") == (250.0, 2.0, 1.5)


def test_top_frames_of_collapsed_stacks(tmp_path: Path) -> None:
    raw = tmp_path / "prof.txt"
    raw.write_text("process 1;thread 2;main (a.py:1);handle (b.py:2);search (c.py:3) 6\n"
                   "process 1;thread 2;main (a.py:1);handle (b.py:2) 3\n"
                   "process 1;thread 2;main (a.py:1);send (d.py:4) 1\n")
    top = top_frames(raw, n=2, n_total=2)
    assert top["samples"] == 10
    assert top["self"] == [["search (c.py:3)", 0.6], ["handle (b.py:2)", 0.3]]
    assert top["total"] == [["main (a.py:1)", 1.0], ["handle (b.py:2)", 0.9]]


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_templates_at_the_extreme_shares(data_dir: Path, share: float) -> None:
    made = templates(_some_events(data_dir), 100, users=10, search_share=share)
    assert all((t.type == "search") == (share == 1.0) for t in made)


def test_the_load_generator_collects_garbage_only_between_steps() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("a failing step")
    assert gc.isenabled()  # even then
