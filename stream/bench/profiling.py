"""Sampling profiles of a process under load with py-spy (``pip install py-spy``), summarised as top frames."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from stream.errors import ConfigError


def start_py_spy(pid: int, seconds: float, out: Path, rate: int = 250) -> subprocess.Popen[bytes]:
    """Record ``pid`` for ``seconds`` into collapsed stacks at ``out`` (non-blocking: the target never pauses)."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).is_file():
        raise ConfigError("profile", "py-spy is not installed (pip install py-spy)")
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
                             "--rate", str(rate), "--format", "raw", "--nonblocking", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def top_frames(collapsed: Path, n: int = 5, n_total: int = 15) -> dict[str, object]:
    """The ``n`` frames with the most samples on top of the stack (self) and the ``n_total`` ones most often
    anywhere in it (total), as [frame, share of all busy samples]; py-spy does not sample idle waiting (epoll)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        samples += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            total[frame] += int(count)

    def share(counter: Counter[str], k: int) -> list[list[object]]:
        return [[frame, round(c / samples, 3)] for frame, c in counter.most_common(k)] if samples else []

    return {"samples": samples, "self": share(own, n), "total": share(total, n_total)}
