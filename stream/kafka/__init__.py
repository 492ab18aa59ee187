"""The Faust and aiokafka wiring: the app factory, thin agents, topics, clients, the state table, followers of
compacted topics, model reload, publishing and reading records.

The only layer that imports Faust or aiokafka for the worker; it may import ``stream.config`` and everything below.
"""
