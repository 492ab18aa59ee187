"""streamrec's stream side: the data path, its Kafka wiring, the local broker, tools, benchmarks and the CLI.

Layers import downwards only (import-linter checks it, see pyproject.toml): ``cli`` -> ``bench`` -> ``tools``
-> ``kafka`` | ``local`` -> ``config`` -> ``core`` -> ``encoders`` | ``index`` -> ``errors``.
"""
