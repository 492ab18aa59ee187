"""Hot model reload: a published model is loaded and indexed in the background, then swapped in.

Releases come from the compacted ``models`` topic (``streamrec publish``), which every worker reads whole.
A topic rather than a watched folder: it reaches every worker on every host through the Kafka they already
use, keeps the order of releases, and tells a worker that starts later which model is current. The
artifact itself stays on storage the workers can read (the release names its path).

A release names the A/B variant whose model it replaces. A release that cannot be loaded (missing,
corrupt, another model type, an unknown variant) is refused with an error log line and a metric; the
previous model keeps serving. If releases arrive while one is loading, only the newest per variant is
loaded next.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from stream.config import Settings
from stream.core.metrics import Metrics
from stream.core.pipeline import Recommender
from stream.core.schemas import ModelRelease
from stream.errors import ArtifactError
from stream.kafka.loading import load_indexed_model

log = logging.getLogger(__name__)


class ModelReloader:
    """Loads released models one at a time, newest first, and swaps them into the recommender."""

    def __init__(self, settings: Settings, recommender: Recommender, metrics: Metrics) -> None:
        self.settings = settings
        self.recommender = recommender
        self.metrics = metrics
        self._pending: dict[str, ModelRelease] = {}
        self._task: asyncio.Task[None] | None = None

    def submit(self, release: ModelRelease) -> None:
        """Load this release after the current one (replacing any release of its variant still waiting)."""
        self._pending[release.variant] = release
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    async def wait_idle(self) -> None:
        """Return when no release is loading or waiting."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        while self._pending:
            _, release = self._pending.popitem()
            await self._load(release)

    async def _load(self, release: ModelRelease) -> None:
        arm = self.recommender.arms.get(release.variant)
        if arm is None:
            log.error("model release %s refused: no variant %r here", release.version, release.variant)
            self.metrics.model_reload_failures.inc()
            return
        current = arm.served.version
        if release.version == current:
            return
        catalog = self.recommender.catalog.copy()  # the live catalog keeps changing while this builds
        started = time.monotonic()
        try:
            served = await asyncio.to_thread(load_indexed_model, Path(release.path), self.settings, catalog,
                                             arm.rules.filters)
            if served.version != release.version:
                raise ArtifactError(f"{release.path} holds model {served.version}, the release says {release.version}")
        except ArtifactError as exc:
            log.error("model release %s refused, variant %s still serves %s: %s", release.version, release.variant,
                      current, exc)
            self.metrics.model_reload_failures.inc()
            return
        self.recommender.swap(served, catalog.seq, release.variant)
        log.info("variant %s now serves model %s (was %s), loaded and indexed in %.2f s", release.variant,
                 served.version, current, time.monotonic() - started)
        self.metrics.model_swaps.inc()
        self.metrics.model.labels(variant=release.variant).info(served.info())
