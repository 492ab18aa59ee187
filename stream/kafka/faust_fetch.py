"""Faust's Kafka transport with the consumer's fetch wait as a setting (``fetch_max_wait_ms``).

Faust's aiokafka driver asks the broker to hold every fetch up to 1.5 s while none of the fetched partitions
has data (``fetch_max_wait_ms=1500``, not configurable), and aiokafka keeps one fetch in flight per broker
(it fetches only the partitions whose last records have all been handed out). Faust hands a fetched batch to
the agents at their own pace, so by the time a busy input partition is drained, the fetch in flight often
asks only for idle ones (erasures, items, an input topic with nothing new) and the broker holds it: the busy
partitions' next records wait behind it, and a worker that fell behind idles instead of catching up. A short
wait bounds that stall; its cost is an empty fetch per wait when nothing arrives (figures: docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Any, cast

import aiokafka
from faust.transport.drivers import aiokafka as driver


class FetchTransport(driver.Transport):
    """The aiokafka transport whose worker consumers wait at most ``fetch_max_wait_ms`` per fetch."""

    fetch_max_wait_ms: int = 1500  # Faust's own value until ``use_fetch_wait`` sets it

    class Consumer(driver.Consumer):
        def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
            return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this when its fetcher is created at start(); the constructor argument Faust passes
        # is only stored here.
        consumer._fetch_max_wait_ms = cast(FetchTransport, transport).fetch_max_wait_ms
        return consumer


def use_fetch_wait(app: Any, fetch_max_wait_ms: int) -> FetchTransport:
    """Give a ``faust.App`` (before it starts) the transport above with this fetch wait; returns it."""
    transport = FetchTransport(app.conf.broker_consumer, app, loop=app.loop)
    transport.fetch_max_wait_ms = fetch_max_wait_ms
    app.transport = transport
    return transport
