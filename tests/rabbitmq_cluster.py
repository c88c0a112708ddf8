"""Starts and stops a three-node RabbitMQ cluster with the MQTT plugin (Debian's `rabbitmq-server`)
on 127.0.0.1 for tests: each node a BEAM of its own with its own node name, MQTT port,
distribution port and data folder, one private epmd for the cluster, clustered by classic peer
discovery. A node can be killed (SIGKILL), restarted (it rejoins with its data folder), or paused
and resumed (SIGSTOP/SIGCONT of its VM: the other nodes stop hearing it, which is what they see of
a network partition; see docs/large-sites.md).

Small on purpose: one scheduler per VM, no busy waiting, low memory watermarks.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

RABBIT_HOME = Path("/usr/lib/rabbitmq/bin")

# the MQTT part of the configuration docs/large-sites.md documents; the tests run this one
# (anonymous only here: a site gives each node and Home Assistant a user). Every session is clean
# and every subscription QoS 0, so RabbitMQ keeps no durable MQTT queue: durable_queue_type and
# max_session_expiry_interval_seconds do not matter. A QoS 0 subscriber's messages wait in its
# connection process; past mailbox_soft_limit (30 by default) RabbitMQ drops them while the socket
# is busy, which the protocol survives (re-sent after the ack timeout) at the cost of that delay
MQTT_CONF = """\
mqtt.allow_anonymous = true
mqtt.vhost = /
mqtt.exchange = amq.topic
mqtt.mailbox_soft_limit = 10000
"""


def rabbitmq_server_binary() -> Path:
    """The server script; a missing broker is an install error, never a skip."""
    path = RABBIT_HOME / "rabbitmq-server"
    if not path.exists():
        raise RuntimeError("rabbitmq-server is not installed: run `make setup`")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class RabbitNode:
    index: int
    name: str
    mqtt_port: int
    dist_port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    kills: int = 0

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return self.mqtt_port

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class RabbitCluster:
    """Three RabbitMQ nodes clustered on one machine; `nodes[i].port` is node i's MQTT port."""

    workdir: Path
    size: int = 3
    extra_conf: str = ""
    nodes: list[RabbitNode] = field(default_factory=list)
    epmd_port: int = 0
    _epmd: subprocess.Popen[bytes] | None = None
    start_s: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.epmd_port = free_port()
        tag = os.getpid() % 10_000
        for i in range(self.size):
            self.nodes.append(
                RabbitNode(
                    index=i,
                    name=f"at{tag}n{i + 1}@localhost",
                    mqtt_port=free_port(),
                    dist_port=free_port(),
                    workdir=self.workdir / f"node{i + 1}",
                )
            )
        cookie = self.workdir / ".erlang.cookie"
        cookie.write_text("ASSETTRACKERTESTCOOKIE")
        cookie.chmod(0o400)
        (self.workdir / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")

    # environment and configuration -------------------------------------------------------------

    def _base_env(self) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_", "PYTEST"))
        }
        env.update(
            HOME=str(self.workdir),
            ERL_EPMD_PORT=str(self.epmd_port),
            RABBITMQ_CONF_ENV_FILE="/dev/null",
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.workdir / "enabled_plugins"),
            LANG="C.UTF-8",
            LC_ALL="C.UTF-8",
        )
        return env

    def node_env(self, node: RabbitNode) -> dict[str, str]:
        env = self._base_env()
        env.update(
            RABBITMQ_NODENAME=node.name,
            RABBITMQ_DIST_PORT=str(node.dist_port),
            RABBITMQ_CONFIG_FILE=str(node.workdir / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(node.workdir / "advanced.config"),
            RABBITMQ_MNESIA_BASE=str(node.workdir / "data"),
            RABBITMQ_LOG_BASE=str(node.workdir / "log"),
            RABBITMQ_PID_FILE=str(node.workdir / "pid"),
            RABBITMQ_PLUGINS_EXPAND_DIR=str(node.workdir / "plugins-expand"),
            # one scheduler, no busy waiting: three VMs share a small machine with other work
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=(
                "+S 1:1 +SDio 2 +A 2 +sbwt none +sbwtdcpu none +sbwtdio none"
            ),
            RABBITMQ_CTL_ERL_ARGS="+S 1:1 +sbwt none",
            # the VM is the process: SIGKILL and SIGSTOP reach it, not a wrapper shell
            RUNNING_UNDER_SYSTEMD="true",
        )
        return env

    def write_conf(self, node: RabbitNode) -> None:
        node.workdir.mkdir(parents=True, exist_ok=True)
        peers = "".join(
            f"cluster_formation.classic_config.nodes.{n.index + 1} = {n.name}\n" for n in self.nodes
        )
        (node.workdir / "rabbitmq.conf").write_text(
            "listeners.tcp = none\n"
            f"mqtt.listeners.tcp.default = 127.0.0.1:{node.mqtt_port}\n"
            "loopback_users = none\n"
            "vm_memory_high_watermark.absolute = 512MiB\n"
            "disk_free_limit.absolute = 50MB\n"
            "log.console = false\n"
            "log.file.level = info\n"
            "cluster_formation.peer_discovery_backend = classic_config\n"
            f"{peers}"
            # a paused node is dropped from the cluster after net_ticktime (the partition the
            # tests make); autoheal brings it back when it resumes
            "cluster_partition_handling = autoheal\n"
            "net_ticktime = 4\n"
            f"{MQTT_CONF}"
            f"{self.extra_conf}"
        )
        (node.workdir / "advanced.config").write_text("[].\n")

    # lifecycle --------------------------------------------------------------------------------

    def _start_epmd(self) -> None:
        epmd = shutil.which("epmd") or "/usr/bin/epmd"
        self._epmd = subprocess.Popen(
            [epmd, "-port", str(self.epmd_port)],
            env=self._base_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _listening(self.epmd_port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"epmd did not listen on {self.epmd_port}")
            time.sleep(0.05)

    def start(self, timeout: float = 180.0) -> None:
        """Starts epmd and every node, and waits until all three are one cluster."""
        rabbitmq_server_binary()
        self._start_epmd()
        started = time.monotonic()
        for node in self.nodes:
            self.start_node(node, wait=False)
        for node in self.nodes:
            self.wait_node(node, timeout)
        self.wait_clustered(timeout)
        self.start_s.append(time.monotonic() - started)

    def start_node(self, node: RabbitNode, *, wait: bool = True, timeout: float = 120.0) -> None:
        self.write_conf(node)
        log = (node.workdir / "stdout.log").open("ab")
        node.proc = subprocess.Popen(
            [str(rabbitmq_server_binary())],
            env=self.node_env(node),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=node.workdir,
        )
        log.close()
        node.paused = False
        if wait:
            self.wait_node(node, timeout)

    def wait_node(self, node: RabbitNode, timeout: float = 120.0) -> None:
        """Until the node's MQTT listener accepts connections (the broker booted fully)."""
        deadline = time.monotonic() + timeout
        while not _listening(node.mqtt_port):
            if node.proc is None or node.proc.poll() is not None:
                raise RuntimeError(f"{node.name} exited: {self.log_tail(node)}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{node.name} did not listen on {node.mqtt_port}: {self.log_tail(node)}"
                )
            time.sleep(0.1)

    def ctl(self, node: RabbitNode, *args: str, timeout: float = 60.0) -> str:
        """rabbitmqctl against `node`; its output."""
        out = subprocess.run(
            [str(RABBIT_HOME / "rabbitmqctl"), "-n", node.name, *args],
            env=self._base_env(),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} on {node.name}: {out.stdout.decode()} "
                f"{out.stderr.decode()}"
            )
        return out.stdout.decode()

    def running_members(self, via: RabbitNode) -> set[str]:
        status = json.loads(self.ctl(via, "cluster_status", "--formatter", "json"))
        return set(status.get("running_nodes", []))

    def wait_clustered(self, timeout: float = 120.0) -> None:
        """Until every running, unpaused node sees all of them as running members."""
        want = {n.name for n in self.nodes}
        deadline = time.monotonic() + timeout
        last: set[str] = set()
        while True:
            via = next(n for n in self.nodes if n.running and not n.paused)
            try:
                last = self.running_members(via)
                if last >= want:
                    return
            except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster did not form: running {sorted(last)}")
            time.sleep(1.0)

    def kill(self, node: RabbitNode) -> None:
        """SIGKILL of the node's VM: a crash, nothing flushed."""
        assert node.proc is not None
        if node.paused:
            node.proc.send_signal(signal.SIGCONT)
        node.proc.kill()
        node.proc.wait()
        node.paused = False
        node.kills += 1

    def restart(self, node: RabbitNode, timeout: float = 120.0) -> None:
        self.start_node(node, wait=True, timeout=timeout)

    def pause(self, node: RabbitNode) -> None:
        """SIGSTOP of the node's VM: its sockets stay open but nothing answers."""
        assert node.proc is not None
        node.proc.send_signal(signal.SIGSTOP)
        node.paused = True

    def resume(self, node: RabbitNode) -> None:
        assert node.proc is not None
        node.proc.send_signal(signal.SIGCONT)
        node.paused = False

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is None:
                continue
            if node.paused:
                node.proc.send_signal(signal.SIGCONT)
            if node.proc.poll() is None:
                node.proc.terminate()
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                node.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()
            node.proc = None
        if self._epmd is not None:
            self._epmd.kill()
            self._epmd.wait()
            self._epmd = None

    def log_tail(self, node: RabbitNode, lines: int = 20) -> str:
        text = []
        for path in (node.workdir / "stdout.log", *sorted((node.workdir / "log").glob("*.log"))):
            try:
                text.extend(path.read_text(errors="replace").splitlines()[-lines:])
            except OSError:
                continue
        return "\n".join(text[-lines:])
