"""A/B variants on a real worker: every list carries its user's variant and that variant's model; the
metrics split by variant; a release for one variant leaves the other alone."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path

from stream.config import Settings
from stream.core.schemas import Recommendation
from stream.core.variants import Assignment
from stream.kafka.consume import RecommendationReader, wait_until_serving
from stream.kafka.publish import publish_model
from stream.local.processes import start_worker, stop_worker
from tests.artifacts import copy_artifact
from tests.streaming import click, collect, send, wait_for_metric


def test_variants_are_served_side_by_side(settings: Settings, tmp_path: Path) -> None:
    assert settings.model_path is not None
    a = copy_artifact(settings.model_path, tmp_path / "a", "gru-a")
    b = copy_artifact(settings.model_path, tmp_path / "b", "gru-b")
    b2 = copy_artifact(settings.model_path, tmp_path / "b2", "gru-b2")
    declared = json.dumps([{"name": "control", "share": 0.6, "model": str(a)},
                           {"name": "treatment", "share": 0.4, "model": str(b), "diversity": 0.5}])
    settings = settings.replace(variants=declared, experiment_salt="it-1").validate()
    assignment = Assignment(settings.variant_specs(), settings.experiment_salt)
    users = [f"ab-{n}" for n in range(40)]
    item = "85"
    proc = start_worker(settings, settings.model_path, settings.home / "worker.log")
    try:
        asyncio.run(wait_until_serving(settings, timeout_s=90, alive=lambda: proc.poll() is None))

        async def run() -> tuple[dict[str, Recommendation], dict[str, Recommendation]]:
            reader = RecommendationReader(settings)
            await reader.start()
            await send(settings, [(settings.topic_clicks, u.encode(), click(u, item, f"{u}-1")) for u in users])
            before = await collect(reader, {f"{u}-1" for u in users}, timeout_s=20)
            await publish_model(settings, b2, variant="treatment")
            # The release loads and indexes in the background, then swaps in: wait for that, however long.
            await asyncio.to_thread(wait_for_metric, settings.metrics_port, ["streamrec_model_swaps_total"], 1)
            await send(settings, [(settings.topic_clicks, u.encode(), click(u, item, f"{u}-2")) for u in users])
            after = await collect(reader, {f"{u}-2" for u in users}, timeout_s=20)
            await reader.stop()
            return before, after

        before, after = asyncio.run(run())
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{settings.metrics_port}/metrics", timeout=5).read().decode()
    finally:
        stop_worker(proc)
    assert len(before) == len(after) == len(users)
    versions = {"control": "gru-a", "treatment": "gru-b"}
    for user in users:
        variant = assignment.variant_of(user)
        first, second = before[f"{user}-1"], after[f"{user}-2"]
        assert first.variant == second.variant == variant
        assert first.model_version == versions[variant]
        assert second.model_version == ("gru-b2" if variant == "treatment" else "gru-a")
    assert {assignment.variant_of(u) for u in users} == {"control", "treatment"}
    for variant in ("control", "treatment"):
        assert f'streamrec_worker_recommendations_total{{event_type="click",variant="{variant}"}}' in metrics
        assert f'streamrec_model_info{{cell="gru",dataset="diginetica",variant="{variant}"' in metrics
    print(f"\nA/B split of {len(users)} users: "
          f"{sum(assignment.variant_of(u) == 'control' for u in users)} control / "
          f"{sum(assignment.variant_of(u) == 'treatment' for u in users)} treatment; publish --variant treatment "
          f"swapped only treatment ({time.strftime('%H:%M:%S')})")
