"""Worker child processes, for the demo and the integration tests (the CLI's ``worker`` in its own session)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from stream.config import Settings


def start_worker(settings: Settings, model: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """``streamrec worker`` as a child process in its own session, configured through STREAMREC_* variables."""
    env = os.environ | settings.replace(model_path=model).to_env() | {"PYTHONUNBUFFERED": "1"}  # logs as they happen
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "stream.cli", "worker"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM (Faust shuts down cleanly, committing offsets), SIGKILL if it does not exit in time."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
