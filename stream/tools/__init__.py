"""Tools over the real datasets: readers, replay onto Kafka, the state audit, online evaluation, reports, the demo.

They may use ``stream.kafka`` and ``stream.local`` and everything below, never the benchmarks or the CLI.
"""
