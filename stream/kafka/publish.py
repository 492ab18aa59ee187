"""Producers of the control topics: model releases (``models``) and catalog changes (``items``)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from aiokafka import AIOKafkaProducer

from stream.config import Settings
from stream.core.schemas import ItemRecord, ModelRelease
from stream.errors import ConfigError
from stream.kafka.clients import client_options


async def publish_model(settings: Settings, path: Path, check: bool = True, variant: str = "default") -> ModelRelease:
    """Make an artifact the current model of a variant on every worker. With ``check``, the artifact is
    loaded here first, so a broken one is refused before any worker sees it (workers check again)."""
    from encoders.artifact import load_artifact, resolve_artifact

    names = [spec.name for spec in settings.variant_specs()]
    if variant not in names:
        raise ConfigError("variants", f"no variant {variant!r} (declared: {', '.join(names)})")
    folder = resolve_artifact(path.resolve(), settings.model_type)
    version = load_artifact(folder).version if check else folder.name
    release = ModelRelease(str(folder), version, time.time(), variant)
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    try:
        # Keyed by variant: compaction keeps the latest release of each.
        await producer.send_and_wait(settings.topic_models, release.to_json(), key=variant.encode())
    finally:
        await producer.stop()
    return release


async def publish_items(settings: Settings, records: Iterable[ItemRecord]) -> int:
    """Produce catalog upserts and deletes, keyed by item id; returns how many were sent."""
    producer = AIOKafkaProducer(**client_options(settings), acks="all", linger_ms=5)
    await producer.start()
    sent = 0
    try:
        for record in records:
            await producer.send(settings.topic_items, record.to_json(), key=record.item_id.encode())
            sent += 1
        await producer.flush()
    finally:
        await producer.stop()
    return sent
