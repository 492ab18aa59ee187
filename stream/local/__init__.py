"""The local Apache Kafka: the broker from Maven Central jars, its configuration, and child processes.

For the CLI, the tests and the benchmarks; no worker code depends on it. Imports ``stream.config`` and below.
"""
