"""The data path and its parts: schemas, user state, re-ranking, catalog, trending, explanations, variants, metrics.

Nothing here imports Faust, aiokafka, the settings or ``stream.kafka``: the core takes plain values and
handles, so it runs in a plain unit test. It may import ``encoders`` (serving only), ``index`` and ``stream.errors``.
"""
