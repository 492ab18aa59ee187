"""The models, one per file with its config dataclass, and their shared inputs and registry.

Each has a ``forward`` for training and a step or scorer for serving. Imports nothing from ``encoders.training``.
"""
