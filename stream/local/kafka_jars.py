"""The Apache Kafka jars for the local broker: resolved once from Maven Central by Maven into a cache folder.

Nothing of Kafka is committed; ``KafkaJars.ensure()`` writes a small pom and runs
``mvn dependency:copy-dependencies`` the first time, and checks that Java 17+ is there.
"""

from __future__ import annotations

import fcntl
import re
import shutil
import subprocess
from pathlib import Path

from stream.errors import BrokerError

KAFKA_VERSION = "4.3.1"
# Kafka logs through slf4j 1.7; without this binding (matching the log4j-core Kafka pulls in) it logs nothing.
LOG4J_VERSION = "2.25.4"
MIN_JAVA = 17
_TAIL = 20

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>streamrec</groupId><artifactId>kafka-jars</artifactId><version>1</version><packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version>
    </dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version></dependency>
  </dependencies>
</project>
"""


def tail(text: str, lines: int = _TAIL) -> str:
    """The last lines of a text (for error messages)."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


class KafkaJars:
    """The Kafka broker jars and their dependencies, resolved once by Maven into a cache folder."""

    def __init__(self, cache_dir: Path, version: str = KAFKA_VERSION) -> None:
        self.cache_dir = cache_dir.resolve()  # the JVM runs in the node folder
        self.version = version
        self.libs_dir = self.cache_dir / version / "libs"
        self._java: str | None = None

    def is_complete(self) -> bool:
        """True when an earlier resolution finished and all its jars are still there."""
        try:
            names = (self.libs_dir / ".complete").read_text().split()
        except OSError:
            return False
        return bool(names) and all((self.libs_dir / n).is_file() for n in names)

    def java(self) -> str:
        """Return the path of a ``java`` of version 17 or newer, or raise BrokerError."""
        if self._java is None:
            java = shutil.which("java")
            if java is None:
                raise BrokerError(f"java is not on PATH; Kafka needs Java {MIN_JAVA}+")
            try:
                out = subprocess.run([java, "-version"], check=False, capture_output=True, timeout=60)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise BrokerError(f"cannot run {java} -version: {exc}") from exc
            text = (out.stderr + out.stdout).decode("utf-8", "replace")
            match = re.search(r'version "(?:1\.)?(\d+)', text)  # "1.8.0_392" (Java 8 and older) or "17.0.15"
            if match is None or int(match.group(1)) < MIN_JAVA:
                found = tail(text, 1) or f"exit code {out.returncode}"
                raise BrokerError(f"Kafka needs Java {MIN_JAVA}+, {java} is: {found}")
            self._java = java
        return self._java

    def ensure(self) -> Path:
        """Check Java, resolve the jars with Maven unless cached, and return their folder."""
        self.java()
        if self.is_complete():
            return self.libs_dir
        root = self.libs_dir.parent
        root.mkdir(parents=True, exist_ok=True)
        # Parallel test processes share one cache: one runs mvn, the others wait for it.
        with (root / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self.is_complete():
                self._resolve(root)
        return self.libs_dir

    def _resolve(self, root: Path) -> None:
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError(f"mvn (Maven) is not on PATH; it is needed once to fetch Kafka into {self.libs_dir}")
        pom = root / "pom.xml"
        pom.write_text(_POM.format(kafka=self.version, log4j=LOG4J_VERSION))
        # Copy into a staging folder, then rename: a crash mid-copy never looks complete.
        staging = root / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(self.libs_dir, ignore_errors=True)
        goal = ["dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={staging}"]
        cmd = [mvn, "-q", "-B", "-f", str(pom), *goal]
        try:
            out = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=root, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BrokerError(f"mvn could not fetch Kafka: {exc}") from exc
        jars = sorted(p.name for p in staging.glob("*.jar"))
        if out.returncode != 0 or not any(n.startswith("kafka_2.13-") for n in jars):
            raise BrokerError(
                f"mvn failed (exit {out.returncode}) to fetch org.apache.kafka:kafka_2.13:{self.version}:\n"
                + tail(re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr))  # even -B leaves colour codes
            )
        (staging / ".complete").write_text("\n".join(jars) + "\n")
        staging.rename(self.libs_dir)
