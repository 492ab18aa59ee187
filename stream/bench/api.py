"""``streamrec bench api``: HTTP latency of a real worker's API while the load generator feeds it events, and what
the requests do to the event path's latency, in one run on a real broker.

Two ``streamrec worker`` children share one consumer group, so each owns half the partitions. Every request goes
to the first worker: half of them name users the second worker owns, so they are routed there. The load
generator (stream/bench/loadgen.py) sends real MovieLens events at ``events_rate`` throughout, to users the
requests then ask about. Steps: events alone (the event path's baseline), then events plus requests at each
HTTP rate. Requests are open-loop: each is due at a fixed time and its latency counts from then, so a slow
answer cannot hold back the requests behind it (no coordinated omission). The client is aiohttp's (a real HTTP
client with keep-alive and the least CPU per request of those installed: it shares the machine with the worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiokafka.partitioner import DefaultPartitioner

from stream.bench.broker import bench_broker
from stream.bench.loadgen import Template, templates
from stream.bench.pipeline import (
    DATASET,
    BenchConfig,
    Phase,
    collector_paused,
    cpu_seconds,
    find_model,
    machine_busy_seconds,
    percentile_ms,
    phase_settings,
)
from stream.config import Settings
from stream.local.processes import start_worker, stop_worker


@dataclass(frozen=True)
class ApiBenchConfig:
    """What one ``bench api`` run does."""

    events_rate: float = 300.0  # events/s fed throughout
    http_rates: tuple[float, ...] = (200.0, 1000.0)  # requests/s of the steps after the events-only one
    duration_s: float = 20.0  # seconds per step
    warmup_s: float = 10.0  # events and requests before the steps (not reported)
    users: int = 610  # distinct user ids of the events (movielens has 610)
    k: int = 10
    artifact: Path | None = None


async def _requests(session: aiohttp.ClientSession, base: str, users: list[list[str]], rate: float, seconds: float,
                    k: int, seed: int) -> dict[str, Any]:
    """Open-loop GETs of users' lists at ``rate`` for ``seconds``, taking turns between the ``users`` lists;
    latency from each request's due time."""
    rng = random.Random(seed)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    pending: set[asyncio.Task[None]] = set()

    async def one(user: str, due: float) -> None:
        async with session.get(f"{base}/v1/users/{user}/recommendations", params={"k": str(k)}) as response:
            await response.read()
            latencies.append(time.perf_counter() - due)
            statuses[response.status] = statuses.get(response.status, 0) + 1

    started = time.perf_counter()
    sent = 0
    while (now := time.perf_counter()) < started + seconds:
        for _ in range(int((now - started) * rate) - sent):
            due = started + sent / rate
            task = asyncio.create_task(one(users[sent % 2][rng.randrange(len(users[sent % 2]))], due))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
        await asyncio.sleep(0.001)
    await asyncio.gather(*pending)
    wall = time.perf_counter() - started
    lat = np.array(latencies)
    return {"http_rate": rate, "requests": sent, "http_rps_achieved": round(len(latencies) / wall, 1),
            "http_p50_ms": percentile_ms(lat, 50), "http_p99_ms": percentile_ms(lat, 99),
            "http_max_ms": percentile_ms(lat, 100),
            "statuses": {str(code): n for code, n in sorted(statuses.items())}}


async def _measure(events: list[Template], run: str, worker: subprocess.Popen[bytes], settings: Settings,
                   config: ApiBenchConfig, others: list[Settings]) -> list[dict[str, Any]]:
    async with Phase(settings, worker.pid, events, run) as phase:
        await phase.wait_ready(worker)
        base = f"http://127.0.0.1:{settings.http_port}"
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector) as session:
            owned = await _wait_owned(session, [base, *(f"http://127.0.0.1:{s.http_port}" for s in others)],
                                      settings.partitions)
            every = list(range(settings.partitions))
            partitioner = DefaultPartitioner()
            names = [f"u{n}" for n in range(config.users)]
            local = [u for u in names if partitioner(u.encode(), every, every) in owned]
            routed = [u for u in names if partitioner(u.encode(), every, every) not in owned]
            users = [local, routed]  # requests alternate: half are routed to the other worker
            await asyncio.gather(phase.sender.run(config.events_rate, config.warmup_s),
                                 _requests(session, base, users, min(config.http_rates), config.warmup_s, config.k, 0))
            await phase.drain(15.0)
            rows = []
            for n, rate in enumerate((0.0, *config.http_rates)):
                served0 = await _served(session, settings.metrics_port)
                with collector_paused():
                    first, cpu0, wall0 = len(phase.reader.outputs), cpu_seconds(worker.pid), time.perf_counter()
                    busy0, own0 = machine_busy_seconds(), cpu_seconds(os.getpid())
                    sent = phase.sender.run(config.events_rate, config.duration_s)
                    if rate:
                        stats, http = await asyncio.gather(sent, _requests(session, base, users, rate,
                                                                           config.duration_s, config.k, n))
                    else:
                        stats, http = await sent, {"http_rate": 0.0}
                    await phase.drain(15.0)
                wall = time.perf_counter() - wall0
                cores = [round((cpu_seconds(worker.pid) - cpu0) / wall, 2),
                         round((cpu_seconds(os.getpid()) - own0) / wall, 2),
                         round((machine_busy_seconds() - busy0) / wall, 2)]
                served = _quantiles_ms(served0, await _served(session, settings.metrics_port))
                outs = phase.reader.outputs[first:]
                lat = np.array([o.received - o.ts for o in outs])
                rows.append({**http, "events_rate": config.events_rate, "events_rate_achieved": round(stats.rate, 1),
                             "lists": len(outs), "event_lat_p50_ms": percentile_ms(lat, 50),
                             "event_lat_p99_ms": percentile_ms(lat, 99), **served,
                             "cores_worker_loadgen_machine": cores, "routed_share": 0.5 if rate else None})
    return rows


async def _served(session: aiohttp.ClientSession, port: int) -> dict[float, float]:
    """The first worker's histogram of the users route (cumulative counts by bucket bound), from its /metrics."""
    out: dict[float, float] = {}
    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith("streamrec_http_request_duration_seconds_bucket{") and \
                    'route="/v1/users/{user_id}/recommendations"' in line:
                bound = float(line.partition('le="')[2].partition('"')[0])  # over every status
                out[bound] = out.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def _quantiles_ms(before: dict[float, float], after: dict[float, float]) -> dict[str, float | None]:
    """p50 and p99 of the worker's own timing of the step's requests (arrival to answer, a routed one's hop
    included), as the upper bound of the histogram bucket they fall in: what the worker adds, without the
    load generator's share of a busy machine."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0

    def at(q: float) -> float | None:
        if not total:
            return None
        bound = next(b for b, c in zip(bounds, counts, strict=True) if c >= q * total)
        return round(bound * 1000, 1) if bound != float("inf") else None

    return {"worker_http_p50_ms_at_most": at(0.5), "worker_http_p99_ms_at_most": at(0.99)}


async def _wait_owned(session: aiohttp.ClientSession, bases: list[str], partitions: int) -> set[int]:
    """The first worker's partitions, once every worker is ready and the partitions are all owned."""
    deadline = time.monotonic() + 180
    while True:
        found: list[set[int]] = []
        for base in bases:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{base}/readyz") as response:
                    if response.status == 200:
                        found.append(set((await response.json())["partitions"]))
        if len(found) == len(bases) and all(found) and set.union(*found) == set(range(partitions)):
            return found[0]
        if time.monotonic() > deadline:
            raise TimeoutError(f"workers not ready with every partition owned: {found}")
        await asyncio.sleep(0.2)


def run_api_bench(settings: Settings, config: ApiBenchConfig, own_broker: bool) -> list[dict[str, Any]]:
    """The whole benchmark: one row per step (events only, then each HTTP rate)."""
    from stream.kafka.topics import ensure_topics
    from stream.local.broker import free_port
    from stream.tools.datasets import load_events

    procs: list[subprocess.Popen[bytes]] = []
    with bench_broker(settings, own_broker) as settings, contextlib.ExitStack() as workers_up:
        workers_up.callback(_stop_all, procs)  # the workers stop before the broker does
        model = find_model(settings, BenchConfig(artifact=config.artifact))
        run = f"benchapi{int(time.time())}"
        shared = phase_settings(settings, run)
        asyncio.run(ensure_topics(shared))
        workers = [shared.replace(home=settings.home / run / name, metrics_port=free_port(), http_port=free_port())
                   for name in ("w1", "w2")]
        for n, worker in enumerate(workers):
            procs.append(start_worker(worker, model, settings.home / "logs" / f"bench-{run}-w{n + 1}.log"))
        needed = int(config.events_rate * (config.warmup_s + config.duration_s * (1 + len(config.http_rates)) + 60))
        events = templates(load_events(DATASET, settings.data_dir), needed, config.users, search_share=0.1)
        rows = asyncio.run(_measure(events, run, procs[0], workers[0], config, workers[1:]))
    load = [round(x, 2) for x in os.getloadavg()]
    return [{"bench": "api", "model": model.name, "duration_s": config.duration_s, **row, "loadavg": load}
            for row in rows]


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop the workers the benchmark started."""
    for proc in procs:
        stop_worker(proc)
