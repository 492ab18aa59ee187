"""The one exception tree of streamrec.

    StreamrecError                 base of everything streamrec raises on purpose
    ├── ConfigError                a setting is invalid; names the setting and why
    ├── InvalidEvent               an input record failed decoding or validation; carries a short reason code
    ├── InvalidRequest             an HTTP API request has a bad parameter; names the parameter (answered 400)
    ├── ArtifactError              a model artifact is missing, incomplete or corrupt
    ├── StateError                 a stored user state is foreign or corrupt
    ├── TrainingError              the training data cannot train or fit what was asked
    ├── SearchError                the index cannot return as many allowed items as asked
    ├── ProcessError               a child process (worker, baseline, profiler) exited or never answered
    └── BrokerError                the local Kafka could not be resolved, started or reached

Invalid events never escape the worker: they are counted and sent to the dead-letter topic. Invalid requests
never escape the HTTP API: they are answered 400 with the parameter's name.
"""

from __future__ import annotations


class StreamrecError(Exception):
    """Base class of all errors streamrec raises deliberately."""


class ConfigError(StreamrecError):
    """A setting is invalid; the message names the setting and says why."""

    def __init__(self, setting: str, why: str) -> None:
        super().__init__(f"setting {setting!r}: {why}")
        self.setting = setting
        self.why = why


class InvalidEvent(StreamrecError):
    """An input record failed decoding or validation.

    ``reason`` is a short, stable code (used as a metric label); ``detail`` is for humans.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class InvalidRequest(StreamrecError):
    """An HTTP API request has a bad parameter; ``parameter`` names it, ``why`` says what is wrong."""

    def __init__(self, parameter: str, why: str) -> None:
        super().__init__(f"parameter {parameter!r}: {why}")
        self.parameter = parameter
        self.why = why


class ArtifactError(StreamrecError):
    """A model artifact is missing, incomplete or corrupt."""


class StateError(StreamrecError):
    """A stored user state is foreign or corrupt."""


class TrainingError(StreamrecError):
    """The training data cannot train or fit what was asked (no training windows, no usable target)."""


class SearchError(StreamrecError):
    """The index cannot return as many allowed items as asked."""


class ProcessError(StreamrecError):
    """A child process (a worker, a baseline, the profiler) exited or did not answer in time."""


class BrokerError(StreamrecError):
    """The local Kafka broker could not be resolved, started or reached."""
