"""Run a real Apache Kafka cluster (KRaft mode) on 127.0.0.1 from the Maven Central jars.

Local runs and integration tests use this rather than a Kafka emulator (see /work/shared/BROKER.md for why).
Each node keeps everything in ``<home>/node-<id>/``: ``server.properties``, ``log4j2.properties``, ``data/``
(log.dirs), ``broker.log`` (Kafka's log), ``stdout.log`` (JVM console: crashes, bad flags) and ``kafka.pid``.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from subprocess import DEVNULL, PIPE, STDOUT
from typing import Any, TypeVar

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from stream.config import Settings
from stream.errors import BrokerError
from stream.local.broker_config import HOST, BrokerNode, java_command, local_nodes, log4j2_properties, server_properties
from stream.local.kafka_jars import KafkaJars, tail

_T = TypeVar("_T")

def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (for tests)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def _tail_file(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - 65536))
            return tail(fh.read().decode("utf-8", "replace"))
    except OSError:
        return ""


def _run_sync(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to its end, even when called from inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    # asyncio.run refuses to nest, so an async caller's probe gets a thread of its own.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def local_kafka(settings: Settings, count: int = 1) -> LocalKafka:
    """The local cluster the settings describe: data in <home>/kafka, jars in the jars cache."""
    return LocalKafka(settings.home / "kafka", KafkaJars(settings.kafka_jars_dir),
                      local_nodes(settings.bootstrap_servers, count))


class LocalKafka:
    """A KRaft cluster of 1..N nodes on 127.0.0.1, run as detached JVM processes.

    The processes outlive the Python process that started them (``streamrec broker start``); any ``LocalKafka``
    over the same ``home`` finds them again through the pid files.
    """

    def __init__(self, home: Path, jars: KafkaJars, nodes: list[BrokerNode] | None = None, heap_mb: int = 768) -> None:
        self.home = home.resolve()
        self.jars = jars
        self.nodes = list(nodes) if nodes else [BrokerNode(1, 9092, 9093)]
        ids = [n.node_id for n in self.nodes]
        ports = [p for n in self.nodes for p in (n.port, n.controller_port)]
        if len(set(ids)) != len(ids) or len(set(ports)) != len(ports):
            raise BrokerError(f"node ids and ports must be unique: {self.nodes}")
        self.heap_mb = heap_mb
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def bootstrap_servers(self) -> str:
        """The clients' bootstrap list, e.g. ``127.0.0.1:9092,127.0.0.1:9094``."""
        return ",".join(f"{HOST}:{n.port}" for n in self.nodes)

    def node_dir(self, node_id: int) -> Path:
        """The folder of one node's configs, data, logs and pid file."""
        return self.home / f"node-{node_id}"

    def pid(self, node_id: int) -> int | None:
        """The process id of a running node, or None when it does not run."""
        node = self._node(node_id)
        return self._read_pid(node) if self._alive(node) else None

    def status(self) -> dict[int, bool]:
        """Map each node id to whether its process is alive."""
        return {n.node_id: self._alive(n) for n in self.nodes}

    def is_running(self) -> bool:
        """True when every node's process is alive (``status`` tells which are not)."""
        return all(self.status().values())

    def start(self, timeout: float = 60) -> float:
        """Start the nodes that do not run and wait until all of them serve metadata.

        Returns the seconds taken, Maven and storage formatting included, or 0.0 when the cluster was already up.
        On failure it stops the nodes it started and raises BrokerError with the tail of their logs.
        """
        began = time.monotonic()
        if all(self._alive(n) and _port_open(n.port) for n in self.nodes):
            return 0.0
        libs, java = self.jars.ensure(), self.jars.java()
        todo = [n for n in self.nodes if not self._alive(n)]
        for node in todo:
            for port in (node.port, node.controller_port):
                if _port_open(port):
                    raise BrokerError(f"port {port} (Kafka node {node.node_id}) is taken by another process")
            self._write_configs(node)
        self._format(java, libs, todo)
        try:
            for node in todo:
                self._launch(node, java, libs)
            self._wait_ready(todo, began + timeout)
        except BaseException:
            self._stop_nodes(todo, 10)
            raise
        return time.monotonic() - began

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM every node, SIGKILL those still alive after ``timeout``; a no-op when nothing runs."""
        self._stop_nodes(self.nodes, timeout)

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node, as a crash would (for failover tests)."""
        node = self._node(node_id)
        self._signal([node], signal.SIGKILL)
        if self._wait_gone([node], 10):
            raise BrokerError(f"Kafka node {node_id} outlived SIGKILL")
        (self.node_dir(node_id) / "kafka.pid").unlink(missing_ok=True)

    def _node(self, node_id: int) -> BrokerNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise BrokerError(f"no node {node_id} in this cluster")

    def _props(self, node: BrokerNode) -> str:
        return str(self.node_dir(node.node_id) / "server.properties")

    def _read_pid(self, node: BrokerNode) -> int | None:
        try:
            return int((self.node_dir(node.node_id) / "kafka.pid").read_text())
        except (OSError, ValueError):
            return None

    def _alive(self, node: BrokerNode) -> bool:
        proc = self._procs.get(node.node_id)
        if proc is not None:  # our child: poll() is exact, and reaps it so no zombie lingers
            if proc.poll() is None:
                return True
            del self._procs[node.node_id]
        pid = self._read_pid(node)
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except OSError:  # gone, or another user's process that reused the pid
            return False
        # A stale pid file may name a zombie, or a pid since reused by another program.
        proc_dir = Path(f"/proc/{pid}")
        if not proc_dir.is_dir():  # no procfs (not Linux): trust the pid
            return True
        try:
            cmdline = (proc_dir / "cmdline").read_bytes()
            state = (proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return self._props(node).encode() in cmdline and state != "Z"

    def _cluster_id(self) -> str:
        # All nodes of a cluster must be formatted with the same id.
        path = self.home / "cluster-id"
        if path.is_file() and path.read_text().strip():
            return path.read_text().strip()
        cid = "-"
        while cid.startswith("-"):  # as Kafka's Uuid.randomUuid: a leading '-' would read as a CLI option
            cid = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        path.write_text(cid + "\n")
        return cid

    def _write_configs(self, node: BrokerNode) -> None:
        ndir = self.node_dir(node.node_id)
        (ndir / "data").mkdir(parents=True, exist_ok=True)
        (ndir / "server.properties").write_text(server_properties(node, self.nodes, ndir / "data"))
        (ndir / "log4j2.properties").write_text(log4j2_properties(ndir / "broker.log"))

    def _java_cmd(self, java: str, libs: Path, node_id: int, heap_mb: int) -> list[str]:
        return java_command(java, libs, self.node_dir(node_id) / "log4j2.properties", heap_mb)

    def _format(self, java: str, libs: Path, nodes: list[BrokerNode]) -> None:
        todo = [n for n in nodes if not (self.node_dir(n.node_id) / "data" / "meta.properties").exists()]
        if not todo:
            return
        tool = ["kafka.tools.StorageTool", "format", "-t", self._cluster_id(), "-c"]
        # One JVM per node, side by side: each takes seconds to boot on 2 cores.
        procs: dict[int, subprocess.Popen[bytes]] = {}
        for n in todo:
            cmd = [*self._java_cmd(java, libs, n.node_id, 256), *tool, self._props(n)]
            procs[n.node_id] = subprocess.Popen(cmd, stdin=DEVNULL, stdout=PIPE, stderr=STDOUT)
        for node_id, proc in procs.items():
            text = proc.communicate()[0].decode("utf-8", "replace")
            if proc.returncode != 0:
                raise BrokerError(f"formatting the storage of Kafka node {node_id} failed:\n{tail(text)}")

    def _launch(self, node: BrokerNode, java: str, libs: Path) -> None:
        ndir = self.node_dir(node.node_id)
        cmd = [*self._java_cmd(java, libs, node.node_id, self.heap_mb), "kafka.Kafka", self._props(node)]
        with (ndir / "stdout.log").open("ab") as out:
            # A session of its own: Ctrl-C in the starting terminal must not reach the broker.
            proc = subprocess.Popen(cmd, stdin=DEVNULL, stdout=out, stderr=STDOUT, cwd=ndir, start_new_session=True)
        self._procs[node.node_id] = proc
        (ndir / "kafka.pid").write_text(f"{proc.pid}\n")

    def _wait_ready(self, started: list[BrokerNode], deadline: float) -> None:
        want = {n.node_id for n in self.nodes}
        while True:
            for node in started:
                proc = self._procs.get(node.node_id)
                if proc is not None and proc.poll() is not None:
                    raise BrokerError(
                        f"Kafka node {node.node_id} exited with code {proc.returncode} while starting\n"
                        + self._logs(node)
                    )
            # Every node must be registered (and unfenced) in the cluster metadata, not merely listening.
            if all(_port_open(n.port) for n in self.nodes) and want <= self._brokers():
                return
            if time.monotonic() > deadline:
                logs = "\n".join(self._logs(n) for n in started)
                raise BrokerError(f"Kafka was not ready before the start timeout\n{logs}")
            time.sleep(0.25)

    def _brokers(self) -> set[int]:
        """The ids of the brokers the cluster metadata lists; empty if it does not answer."""

        async def describe() -> set[int]:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, request_timeout_ms=5000)
            try:
                await asyncio.wait_for(admin.start(), 10)
                info = await asyncio.wait_for(admin.describe_cluster(), 10)
                return {int(b["node_id"]) for b in info["brokers"]}
            finally:
                await admin.close()

        try:
            return _run_sync(describe)
        except (KafkaError, OSError, TimeoutError):  # not ready yet
            return set()

    def _logs(self, node: BrokerNode) -> str:
        paths = [self.node_dir(node.node_id) / name for name in ("broker.log", "stdout.log")]
        return "\n".join(f"--- end of {p} ---\n{_tail_file(p) or '(empty)'}" for p in paths)

    def _signal(self, nodes: list[BrokerNode], sig: signal.Signals) -> None:
        for node in nodes:
            pid = self.pid(node.node_id)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)

    def _stop_nodes(self, nodes: list[BrokerNode], timeout: float) -> None:
        # All nodes at once: stopped one by one, the last node of 3 has lost its quorum and hangs in controlled
        # shutdown until SIGKILL (measured). Together, 3 nodes take ~6 s: the last controller keeps retrying its
        # departed peers for ~5 s.
        self._signal(nodes, signal.SIGTERM)
        left = self._wait_gone(nodes, timeout)
        self._signal(left, signal.SIGKILL)
        if self._wait_gone(left, 10):
            raise BrokerError(f"Kafka nodes {[n.node_id for n in left]} outlived SIGKILL")
        for node in nodes:
            (self.node_dir(node.node_id) / "kafka.pid").unlink(missing_ok=True)

    def _wait_gone(self, nodes: list[BrokerNode], timeout: float) -> list[BrokerNode]:
        """Wait for the nodes' processes to end; return those still alive after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            left = [n for n in nodes if self._alive(n)]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.1)
