"""Benchmarks (``streamrec bench ...``, each printing JSON), the load generator and the profiler.

They may use every layer below them (tools, kafka, local, core, encoders, index), never the CLI.
"""
