"""``streamrec bench pipeline``: event-to-list latency and saturation of a real worker on a real broker, next
to a bare Faust agent and a bare aiokafka loop measured in the same run on the same broker.

Three systems run side by side, each on its own fresh topics and consumer group: a ``streamrec worker`` child
serving a trained artifact, and the baselines of ``stream/bench/bare.py``. After a warm-up (the worker at
``rate``, the baselines at up to 500/s, ``warmup_s`` each; the worker's is reported as ``worker_warmup``), a
fixed-rate run at ``rate`` sends to the worker alone: latency percentiles (event ``ts`` -> list fetched by the
reader) and the worker's CPU per 1,000 events (``/proc/<pid>/stat``), optionally under py-spy. Then a rate ramp
in which the three take turns at each rate gives each one's highest sustained rate.

Every step first waits for the backlog an earlier step left (a fixed-rate run above the sustainable rate
leaves one). A ramp step passes when the sender achieved its rate (>= 95 %) and the backlog (events sent minus
outputs seen) at the end of the step is under ``MAX_BACKLOG_S`` seconds of input: a consumer slower than its input
falls further behind every second, so after a few seconds its backlog exceeds any fixed bound. The ramp stops
at the first failing step, then tries once halfway between the last pass and that failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaProducer

from stream.bench.broker import bench_broker
from stream.bench.loadgen import OutputReader, PacedSender, Template, templates
from stream.bench.profiling import start_py_spy, top_frames
from stream.config import Settings
from stream.core.schemas import Event
from stream.errors import ConfigError, ProcessError
from stream.kafka.clients import client_options
from stream.local.processes import start_worker, stop_worker

DATASET = "movielens"  # its tags are real search queries
MAX_BACKLOG_S = 0.5  # a step passes when the consumer ends it less than this much input behind
MIN_SEND_SHARE = 0.95  # below this share of the asked rate the sender, not the consumer, was the limit
DRAIN_S = 15.0  # longest wait for the outputs of a step, for its latency figures
DRAIN_BEFORE_S = 90.0  # longest wait for an earlier step's backlog before a step starts
DRAIN_AFTER_FIXED_S = 600.0  # longest wait for the fixed run's backlog before the ramp
IDLE_CORES = 0.2  # a process under test using less than this with no input has worked off its backlog
DEFAULT_RAMP = (250.0, 500.0, 1000.0, 1500.0, 2000.0, 3000.0, 4000.0, 6000.0, 8000.0, 12000.0)


@dataclass(frozen=True)
class BenchConfig:
    """What one ``bench pipeline`` run does."""

    rate: float = 1000.0  # events/s of the fixed-rate latency run
    duration_s: float = 30.0  # length of the fixed-rate run
    users: int = 610  # distinct user ids (movielens has 610; more reuse real histories under new ids)
    model: str = "gru"  # gru | lstm | sasrec: the artifact type served
    search_share: float = 0.1  # share of search events (queries = movielens tags)
    step_s: float = 6.0  # seconds per ramp step
    ramp: tuple[float, ...] = DEFAULT_RAMP  # the rates tried, in order
    warmup_s: float = 10.0  # sending before the fixed run (reported apart): a new worker is slow at first
    baselines: bool = True  # also ramp the bare Faust agent and the bare aiokafka loop
    artifact: Path | None = None  # the model to serve; None = newest in <home>/models, else train one
    profile: Path | None = None  # py-spy the worker during the fixed-rate run, collapsed stacks to this file


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (``/proc/<pid>/stat`` fields 14 and 15)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of all of a process's threads so far (``/proc/<pid>/task``):
    each is a thread going to sleep or being put off the CPU, so per event they count its wake-ups."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status", "rb") as f:
                total += sum(int(line.split()[1]) for line in f if b"ctxt_switches:" in line)
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all cores of the machine spent busy so far (``/proc/stat``: all but idle and iowait)."""
    with open("/proc/stat", "rb") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def stage_totals(port: int) -> dict[str, list[float]]:
    """The worker's per-stage time sums and counts (``streamrec_pipeline_stage_seconds``) from its /metrics."""
    from urllib.request import urlopen

    totals: dict[str, list[float]] = {}
    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            for suffix, slot in (("_sum", 0), ("_count", 1)):
                prefix = f"streamrec_pipeline_stage_seconds{suffix}{{stage=\""
                if line.startswith(prefix):
                    stage, _, value = line[len(prefix):].partition('"} ')
                    totals.setdefault(stage, [0.0, 0.0])[slot] = float(value)
    return totals


def batch_sizes(port: int) -> dict[str, float | None]:
    """The p50 and p99 of the worker's search micro-batches (records) and text-model batches (new queries), from
    their histograms on its /metrics: the upper bound of the bucket each quantile falls in."""
    from urllib.request import urlopen

    buckets: dict[str, list[tuple[float, float]]] = {"search_batch_events": [], "text_batch_queries": []}
    names = {"search_batch_events": 'streamrec_worker_input_batch_events_bucket{event_type="search",le="',
             "text_batch_queries": 'streamrec_worker_text_batch_queries_bucket{le="'}
    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            for key, prefix in names.items():
                if line.startswith(prefix):
                    bound, _, value = line[len(prefix):].partition('"} ')
                    buckets[key].append((float(bound), float(value)))
    out: dict[str, float | None] = {}
    for key, rows in buckets.items():
        total = rows[-1][1] if rows else 0.0
        for q in (50, 99):
            out[f"{key}_p{q}"] = next((bound for bound, count in rows if count >= total * q / 100), None) \
                if total else None
    return out


def _stage_means_us(before: dict[str, list[float]], after: dict[str, list[float]]) -> dict[str, float]:
    """Mean microseconds per event of each stage between two scrapes."""
    out = {}
    for stage, (total, count) in after.items():
        total0, count0 = before.get(stage, [0.0, 0.0])
        if count > count0:
            out[stage] = round((total - total0) / (count - count0) * 1e6, 1)
    return out


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection in this (the load generator's) process while a step runs: it collects
    before the step and after it instead.

    The sender stamps each event's ``ts`` and the reader each output's arrival, so a pause here adds to every
    latency in flight: its full collections, as the outputs pile up, would set the p99 of every system
    measured (docs/benchmarks.md). Memory is freed by reference counting meanwhile."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


def percentile_ms(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 2) if len(values) else None


def phase_settings(settings: Settings, tag: str) -> Settings:
    """Settings with this phase's own app id (consumer group) and topics."""
    names = ("clicks", "searches", "purchases", "items", "recommendations", "dead-letters", "erasures", "co-views",
             "item-neighbours")
    topics = {f"topic_{n.replace('-', '_')}": f"{tag}-{n}" for n in names}
    return settings.replace(app_id=tag, **topics)


def find_model(settings: Settings, config: BenchConfig) -> Path:
    """The artifact to serve: given, the newest of its type in <home>/models, or a freshly trained one."""
    from encoders.artifact import latest_artifact, resolve_artifact, save_artifact

    if config.artifact is not None:
        return resolve_artifact(config.artifact, config.model)
    found = latest_artifact(settings.home / "models", cell=config.model)
    if found is not None:
        return found
    if config.model not in ("gru", "lstm"):
        raise ConfigError("model", f"no {config.model} artifact in {settings.home / 'models'}; pass --artifact")
    from encoders.training.train import TrainConfig, train
    from stream.tools.datasets import load_events

    print(f"training a {config.model} on {DATASET} (no artifact found) ...", file=sys.stderr, flush=True)
    result = train(load_events(DATASET, settings.data_dir), cell=config.model, config=TrainConfig())
    return save_artifact(result.model, result.item_ids, result.metrics, DATASET, settings.home / "models",
                         result.search_blend, result.live)


def _start_bare(settings: Settings, kind: str, log_path: Path) -> subprocess.Popen[bytes]:
    """A baseline child process (``python -m stream.bench.bare kind``), started like the worker."""
    env = os.environ | settings.to_env() | {"PYTHONUNBUFFERED": "1"}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "stream.bench.bare", kind], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


class Phase:
    """One consumer under test: a sender into its input topics and a reader of its output topic."""

    def __init__(self, settings: Settings, pid: int, events: list[Template], tag: str) -> None:
        self.settings = settings
        self.pid = pid
        self.producer = AIOKafkaProducer(**client_options(settings), acks=1, linger_ms=1)
        self.sender = PacedSender(self.producer, settings.input_topics, events, tag)
        self.reader = OutputReader(client_options(settings), settings.topic_recommendations,
                                   settings.partitions, tag)

    async def __aenter__(self) -> Phase:
        await self.producer.start()
        await self.reader.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.reader.stop()
        await self.producer.stop()

    async def wait_ready(self, alive: subprocess.Popen[bytes], timeout_s: float = 180.0) -> float:
        """Send a probe click each second until its output comes back (partitions assigned, table ready)."""
        started = time.time()
        n = 0
        while time.time() - started < timeout_s:
            if alive.poll() is not None:
                raise ProcessError(f"the process under test exited (code {alive.returncode}); see its log")
            probe = Event("click", "__bench_probe__", time.time(), f"probe-{n}", item_id="1")
            await self.producer.send_and_wait(self.settings.topic_clicks, probe.to_json(), key=b"__bench_probe__")
            for _ in range(20):
                await asyncio.sleep(0.05)
                if probe.event_id in self.reader.probes:
                    return time.time() - started
            n += 1
        raise ProcessError(f"no output for a probe within {timeout_s:.0f} s")

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every event sent so far has its output; False when ``timeout_s`` ran out first."""
        deadline = time.time() + timeout_s
        while len(self.reader.outputs) < self.sender.total:
            if time.time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def settle(self, deadline: float) -> bool:
        """Wait until the process under test is near idle (under ``IDLE_CORES`` over a second) with no input;
        False when ``deadline`` (a ``time.time()``) came first."""
        while time.time() < deadline:
            before = cpu_seconds(self.pid)
            await asyncio.sleep(1.0)
            if cpu_seconds(self.pid) - before < IDLE_CORES:
                return True
        return False

    async def step(self, rate: float, seconds: float) -> dict[str, Any]:
        """Send at ``rate`` for ``seconds``, wait for the outputs, and summarise the step.

        Each step starts from an empty backlog (a failed step before it may have left one), so its
        latency and backlog are its own.
        """
        drained = await self.drain(DRAIN_BEFORE_S)
        with collector_paused():
            first, cpu0, switches0 = len(self.reader.outputs), cpu_seconds(self.pid), context_switches(self.pid)
            busy0, own0, wall0 = machine_busy_seconds(), cpu_seconds(os.getpid()), time.perf_counter()
            stats = await self.sender.run(rate, seconds)
            backlog = self.sender.total - len(self.reader.outputs)
            await self.drain(DRAIN_S)
        cpu, switches = cpu_seconds(self.pid) - cpu0, context_switches(self.pid) - switches0
        wall = time.perf_counter() - wall0
        busy, own = machine_busy_seconds() - busy0, cpu_seconds(os.getpid()) - own0
        outs = self.reader.outputs[first:]
        lat = np.array([o.received - o.ts for o in outs])
        gen = np.array([o.generated - o.ts for o in outs if o.generated is not None])
        passed = drained and stats.rate >= MIN_SEND_SHARE * rate and backlog <= MAX_BACKLOG_S * rate
        return {"rate": rate, "send_rate_achieved": round(stats.rate, 1), "events_sent": stats.sent,
                "outputs": len(outs), "backlog_at_end": backlog, "lat_p50_ms": percentile_ms(lat, 50),
                "lat_p95_ms": percentile_ms(lat, 95), "lat_p99_ms": percentile_ms(lat, 99),
                "lat_max_ms": percentile_ms(lat, 100),
                "worker_lat_p50_ms": percentile_ms(gen, 50), "worker_lat_p99_ms": percentile_ms(gen, 99),
                # per event handled (a consumer that fell behind handled fewer than were sent)
                "cpu_s_per_1k_events": round(cpu / len(outs) * 1000, 4) if outs else None,
                "context_switches_per_event": round(switches / len(outs), 2) if outs else None,
                # cores busy during the step: the consumer under test, this load generator, the whole machine
                # (the broker is most of the rest)
                "cores": [round(cpu / wall, 2), round(own / wall, 2), round(busy / wall, 2)],
                "sender_bound": stats.rate < MIN_SEND_SHARE * rate, "drained_before": drained, "passed": passed}


async def _ramp(phases: dict[str, Phase], rates: tuple[float, ...], seconds: float) -> dict[str, Any]:
    """Per system, the highest rate whose backlog stays bounded, and its steps.

    The systems take turns at each rate, so a change of load on the shared machine during the ramp touches
    them alike instead of skewing the ratio. A system leaves the ramp at its first failing step, then gets one
    step halfway between its last pass and that failure.
    """
    best = dict.fromkeys(phases, 0.0)
    failed: dict[str, float] = {}
    steps: dict[str, list[dict[str, Any]]] = {name: [] for name in phases}
    for rate in rates:
        for name in [n for n in phases if n not in failed]:
            row = await phases[name].step(rate, seconds)
            steps[name].append(row)
            if row["passed"]:
                best[name] = rate
            else:
                failed[name] = rate
    for name, rate in failed.items():
        if best[name] > 0 and rate / best[name] > 1.2:
            middle = float(round((best[name] + rate) / 2))
            row = await phases[name].step(middle, seconds)
            steps[name].append(row)
            best[name] = middle if row["passed"] else best[name]
    return {"best": best, "steps": steps}


async def _measure(systems: dict[str, tuple[Settings, subprocess.Popen[bytes]]], events: list[Template],
                   config: BenchConfig, run: str) -> dict[str, Any]:
    """Wait for every system, run the worker's fixed-rate run (profiled on request), then the ramp."""
    phases = {name: Phase(s, proc.pid, events, f"{run}-{name}") for name, (s, proc) in systems.items()}
    async with contextlib.AsyncExitStack() as stack:
        for phase in phases.values():
            await stack.enter_async_context(phase)
        ready = {name: round(await phases[name].wait_ready(proc), 1) for name, (_, proc) in systems.items()}
        # Warm-up, reported but not in the fixed run: the worker at the fixed run's own rate, so that run starts
        # with the worker and the broker (a fresh JVM) past their first seconds at that load; the baselines at
        # up to 500/s.
        warmup = {name: await phase.step(config.rate if name == "worker" else min(config.rate, 500.0),
                                         config.warmup_s) for name, phase in phases.items()}
        worker_settings, worker = systems["worker"]
        spy = start_py_spy(worker.pid, config.duration_s, config.profile) if config.profile else None
        stages = stage_totals(worker_settings.metrics_port)
        fixed = await phases["worker"].step(config.rate, config.duration_s)
        fixed["stage_mean_us"] = _stage_means_us(stages, stage_totals(worker_settings.metrics_port))
        fixed["batches"] = batch_sizes(worker_settings.metrics_port)  # warm-up and fixed run together
        if spy is not None and config.profile is not None:
            _, err = spy.communicate()
            if spy.returncode:
                raise ProcessError(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
            fixed["profile"] = top_frames(config.profile)
        # A fixed rate the worker could not keep up with leaves a backlog: the ramp starts once it is worked
        # off (the lists, then what the worker does after them: counting the co-views, applying the neighbour
        # lists), or its first step would pay for the fixed run's events, not its own.
        started = time.time()
        drained = await phases["worker"].drain(DRAIN_AFTER_FIXED_S) \
            and await phases["worker"].settle(started + DRAIN_AFTER_FIXED_S)
        fixed["drain_after_s"] = round(time.time() - started, 1) if drained else None
        ramp = await _ramp(phases, config.ramp, config.step_s)
    return {"ready_s": ready, "warmup": warmup, "fixed": fixed, **ramp}


def _start(settings: Settings, name: str, model: Path, run: str) -> tuple[Settings, subprocess.Popen[bytes]]:
    """One system under test on fresh topics: the worker, or a baseline (``faust``, ``aiokafka``)."""
    from stream.kafka.topics import ensure_topics

    tag = f"{run}-{name}"
    own = phase_settings(settings, tag)
    asyncio.run(ensure_topics(own))
    log = settings.home / "logs" / f"bench-{tag}.log"
    proc = start_worker(own, model, log) if name == "worker" else _start_bare(own, name, log)
    return own, proc


def _cpu_at_common_rate(steps: dict[str, list[dict[str, Any]]], a: str, b: str) -> tuple[float, float, float] | None:
    """(rate, CPU s/1k of a, of b) at the highest ramp rate both passed: a noise-robust cost comparison."""
    passed = {name: {s["rate"]: s["cpu_s_per_1k_events"] for s in rows if s["passed"]} for name, rows in steps.items()}
    common = sorted(set(passed.get(a, {})) & set(passed.get(b, {})))
    return (common[-1], passed[a][common[-1]], passed[b][common[-1]]) if common else None


def run_bench(settings: Settings, config: BenchConfig, own_broker: bool) -> dict[str, Any]:
    """The whole benchmark; returns the one JSON object ``bench pipeline`` prints."""
    from stream.local.broker import free_port
    from stream.tools.datasets import load_events

    load_before = os.getloadavg()
    with bench_broker(settings, own_broker) as settings:
        model = find_model(settings, config)
        # Workers export metrics on a port of their own: others run workers on this machine.
        settings = settings.replace(metrics_port=free_port(), http_port=free_port())
        needed = int(config.rate * (config.duration_s + config.warmup_s) + sum(config.ramp) * config.step_s * 1.5)
        events = templates(load_events(DATASET, settings.data_dir), min(needed, 400_000), config.users,
                           config.search_share)
        run = f"bench{int(time.time())}"
        names = ["worker", "faust", "aiokafka"] if config.baselines else ["worker"]
        systems: dict[str, tuple[Settings, subprocess.Popen[bytes]]] = {}
        try:
            for name in names:
                systems[name] = _start(settings, name, model, run)
            result = asyncio.run(_measure(systems, events, config, run))
        finally:
            for _, proc in systems.values():
                stop_worker(proc)
    fixed, best, steps = result["fixed"], result["best"], result["steps"]
    faust_max = best.get("faust")
    cpu = _cpu_at_common_rate(steps, "worker", "faust")
    return {
        "rate": config.rate, "duration_s": config.duration_s, "users": config.users, "model": model.name,
        "search_share": config.search_share, "events_sent": fixed["events_sent"], "lists_received": fixed["outputs"],
        "send_rate_achieved": fixed["send_rate_achieved"],
        **{k: fixed[k] for k in ("lat_p50_ms", "lat_p95_ms", "lat_p99_ms", "lat_max_ms", "worker_lat_p50_ms",
                                 "worker_lat_p99_ms")},
        "max_sustained_rate": best["worker"],
        "worker_cpu_s_per_1k_events": fixed["cpu_s_per_1k_events"],
        "worker_context_switches_per_event": fixed["context_switches_per_event"],
        "cores_worker_loadgen_machine": fixed["cores"],
        "bare_faust_max_rate": faust_max,
        "bare_aiokafka_max_rate": best.get("aiokafka"),
        "ratio_vs_bare_faust": round(best["worker"] / faust_max, 3) if faust_max else None,
        # CPU per event of the worker and of the bare agent at the highest rate both sustained, and their
        # ratio: what ratio_vs_bare_faust would be if CPU were the only limit, and far less noisy.
        "cpu_compared_at_rate": cpu[0] if cpu else None,
        "worker_cpu_s_per_1k_at_that_rate": cpu[1] if cpu else None,
        "bare_faust_cpu_s_per_1k_events": cpu[2] if cpu else None,
        "cpu_ratio_vs_bare_faust": round(cpu[2] / cpu[1], 3) if cpu and cpu[1] else None,
        "step_s": config.step_s, "ready_s": result["ready_s"],
        "worker_warmup": _compact([result["warmup"]["worker"]])[0],  # a ramp row: the warm-up before the run
        "worker_stage_mean_us": fixed["stage_mean_us"],
        "worker_batches": fixed["batches"],
        "worker_drain_after_fixed_s": fixed["drain_after_s"],
        **({"profile": fixed["profile"]} if "profile" in fixed else {}),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "ramp": {name: _compact(rows) for name, rows in steps.items()},
    }


def _compact(steps: list[dict[str, Any]]) -> list[list[Any]]:
    """Ramp steps as [rate, achieved, backlog, p50 ms, p99 ms, cpu s/1k, passed, context switches per event,
    [cores busy: consumer, load generator, machine]] rows, to keep the line short."""
    return [[s["rate"], s["send_rate_achieved"], s["backlog_at_end"], s["lat_p50_ms"], s["lat_p99_ms"],
             s["cpu_s_per_1k_events"], s["passed"], s["context_switches_per_event"], s["cores"]] for s in steps]
