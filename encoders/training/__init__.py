"""Training and offline evaluation: sequences from dataset events, the training recipe, baselines, the
item-kNN mix, the re-ranker's fit, and full-ranking evaluation.

May import ``encoders`` and ``encoders.models``; nothing on the serving path imports it.
"""
