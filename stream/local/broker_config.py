"""What a local Kafka node is and the files it runs from: server.properties, log4j2.properties, the JVM command.

Pure rendering, no processes: stream/local/broker.py writes these into each node's folder and starts the JVMs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stream.errors import BrokerError

HOST = "127.0.0.1"

# kafka-run-class.sh's flags, plus: exit on OOM (a half-alive broker is harder to read than a dead one), and no
# log4j shutdown hook (it races Kafka's own hook and drops the shutdown log; the appender flushes each line anyway).
JVM_FLAGS = [
    *("-server", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35"),
    *("-XX:+ExplicitGCInvokesConcurrent", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true"),
    "-Dlog4j2.shutdownHookEnabled=false",
]

# Only a file appender: the console (stdout.log) then holds nothing but JVM trouble.
_LOG4J2 = """status = warn
appender.f.type = RollingFile
appender.f.name = file
appender.f.fileName = {log}
appender.f.filePattern = {log}.%i
appender.f.layout.type = PatternLayout
appender.f.layout.pattern = [%d] %p %m (%c)%n
appender.f.policies.type = Policies
appender.f.policies.size.type = SizeBasedTriggeringPolicy
appender.f.policies.size.size = 20MB
appender.f.strategy.type = DefaultRolloverStrategy
appender.f.strategy.max = 2
rootLogger.level = INFO
rootLogger.appenderRef.f.ref = file
"""

_SERVER = """# Written by streamrec (stream/local/broker_config.py) at every start; edits are lost.
process.roles=broker,controller
node.id={n.node_id}
listeners=PLAINTEXT://{host}:{n.port},CONTROLLER://{host}:{n.controller_port}
advertised.listeners=PLAINTEXT://{host}:{n.port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
# A static quorum, so a plain `format` works and every node knows all voters at once.
controller.quorum.voters={voters}
log.dirs={data}
# Internal topics must fit the nodes there are; min ISR 2 of 3 survives one dead node.
default.replication.factor={rf}
offsets.topic.replication.factor={rf}
transaction.state.log.replication.factor={rf}
transaction.state.log.min.isr={min_isr}
share.coordinator.state.topic.replication.factor={rf}
share.coordinator.state.topic.min.isr={min_isr}
# The first group join creates __consumer_offsets (exactly-once: __transaction_state). With the default 50
# partitions that join took 0.6 s here, with 4 it took 0.27 s, and each partition is a log on every replica.
# Four still spread group coordinators over three nodes.
offsets.topic.num.partitions=4
transaction.state.log.num.partitions=4
share.coordinator.state.topic.num.partitions=1
num.partitions=1
# Topics are created explicitly, with the partition counts Faust expects.
auto.create.topics.enable=false
# Rebalance as soon as the first member joins: tests start groups all the time.
group.initial.rebalance.delay.ms=0
# Let tests use short consumer session timeouts, to notice dead workers quickly.
group.min.session.timeout.ms=1000
# Fence a killed node after 6 s rather than 9 s, so failover tests end sooner.
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=6000
# The machines have 2 cores, shared by up to three JVMs and the workers.
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
background.threads=4
# The log cleaner takes this buffer from the heap at start; the default 128 MiB is much of a 768 MiB heap.
log.cleaner.dedupe.buffer.size=33554432
# Compaction only cleans closed segments; with 1 GiB segments Faust's changelogs would never compact locally.
log.segment.bytes=67108864
# Keep a month: local data sets are replayed across days of experiments.
log.retention.hours=720
"""


@dataclass(frozen=True)
class BrokerNode:
    """One Kafka process, both broker and KRaft controller, with its two ports."""

    node_id: int
    port: int
    controller_port: int
    sasl_port: int | None = None  # an extra SASL_PLAINTEXT listener (PLAIN), for clients that authenticate
    sasl_users: tuple[tuple[str, str], ...] = ()  # (user, password) accepted on it


def local_nodes(bootstrap_servers: str, count: int = 1) -> list[BrokerNode]:
    """Nodes for a local cluster listening where the settings point: node i (1-based) uses the first
    bootstrap port + 2(i-1) for clients and the next port for its controller."""
    if count < 1:
        raise BrokerError("a cluster needs at least one node")
    host, _, port = bootstrap_servers.split(",")[0].strip().rpartition(":")
    if host not in (HOST, "localhost"):
        raise BrokerError(f"the local broker listens on {HOST}; bootstrap_servers is {bootstrap_servers!r}")
    base = int(port)
    return [BrokerNode(i + 1, base + 2 * i, base + 2 * i + 1) for i in range(count)]


def server_properties(node: BrokerNode, nodes: list[BrokerNode], data: Path) -> str:
    """server.properties of one node of the cluster ``nodes`` (a static KRaft quorum of all of them)."""
    rf = min(3, len(nodes))
    voters = ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in nodes)
    props = _SERVER.format(n=node, host=HOST, voters=voters, data=data, rf=rf, min_isr=min(2, rf))
    if node.sasl_port is None:
        return props
    sasl = f"SASL_PLAINTEXT://{HOST}:{node.sasl_port}"
    users = " ".join(f'user_{u}="{p}"' for u, p in node.sasl_users)
    return (props.replace(f"CONTROLLER://{HOST}:{node.controller_port}\n",
                          f"CONTROLLER://{HOST}:{node.controller_port},{sasl}\n")
            .replace(f"advertised.listeners=PLAINTEXT://{HOST}:{node.port}\n",
                     f"advertised.listeners=PLAINTEXT://{HOST}:{node.port},{sasl}\n")
            .replace("CONTROLLER:PLAINTEXT\n", "CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT\n")
            + "sasl.enabled.mechanisms=PLAIN\nlistener.name.sasl_plaintext.plain.sasl.jaas.config="
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};\n")


def log4j2_properties(log: Path) -> str:
    """Kafka's logging: one rolling file, nothing on the console."""
    return _LOG4J2.format(log=log)


def java_command(java: str, libs: Path, log4j: Path, heap_mb: int) -> list[str]:
    """The JVM invocation (before the main class) with the jars of ``libs`` on the class path."""
    heap = [f"-Xms{min(256, heap_mb)}m", f"-Xmx{heap_mb}m"]
    return [java, *heap, *JVM_FLAGS, f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*"]
