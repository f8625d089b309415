"""A Ray cluster of one or more nodes on this machine, on loopback, for tests and benchmarks.

Each node is a real ``ray start`` process (``--block``, so it has a PID that owns the node):
the head on 127.0.0.2 and every further node on the next loopback address, joined with
``ray start --address``. Every port is chosen free on 127.0.0.1 beforehand, so two clusters
(or another user's) never collide. Stopping signals exactly the processes this cluster
started, by PID, never ``ray stop``, which would stop every Ray cluster of the machine.

Why 127.0.0.2 and not 127.0.0.1: Ray replaces ``127.0.0.1`` and ``localhost`` with the
machine's routable address, so nodes would talk over that. Other loopback addresses are kept.
The servers still bind to every interface (Ray offers no option against that).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HEAD_IP = "127.0.0.2"
# Ray Data's executor and a scoring actor fit in far less; Ray's default is 30% of memory.
DEFAULT_OBJECT_STORE_BYTES = 200 * 2**20
START_TIMEOUT_SECONDS = 120.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ray_executable() -> str:
    return str(Path(sys.executable).with_name("ray"))


def _descendants(roots: list[int]) -> list[int]:
    """Every live process in the process groups of ``roots`` (each node is started in a session
    of its own) and below them (workers start sessions of their own, as a raylet's children)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parent, group = int(fields[1]), int(fields[2])
        except (OSError, IndexError, ValueError):
            continue
        pid = int(stat.parent.name)
        children.setdefault(parent, []).append(pid)
        if group in roots and pid not in roots:
            children.setdefault(group, []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return sorted(found)


@dataclass
class LocalRayCluster:
    """Nodes started by :func:`start`; ``address`` is what ``BATCH_PLATFORM_RAY_ADDRESS`` takes."""

    address: str
    temp_dir: Path
    nodes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [node.pid for node in self.nodes]

    def processes(self) -> list[int]:
        """The PIDs of this cluster's processes: nodes, raylets, GCS and workers."""
        return _descendants(self.pids)

    def worker_pids(self, title: str) -> list[int]:
        """Processes of this cluster whose title (Ray sets ``ray::<actor or task>``) has
        ``title``."""
        found = []
        for pid in self.processes():
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if command.startswith("ray::") and title in command:
                found.append(pid)
        return found

    def stop(self, grace_seconds: float = 10.0) -> None:
        """SIGTERM the nodes, then SIGKILL whatever of this cluster is left, by PID."""
        everything = self.processes()
        for node in self.nodes:
            if node.poll() is None:
                node.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        for node in self.nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.wait(timeout=max(0.1, deadline - time.monotonic()))
        for pid in everything:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for node in self.nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.wait(timeout=10)

    def __enter__(self) -> LocalRayCluster:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _node_args(cpus: int, object_store_bytes: int) -> list[str]:
    return [
        "--num-cpus", str(cpus), "--num-gpus", "0",
        "--object-store-memory", str(object_store_bytes),
        "--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
        "--dashboard-agent-listen-port", str(free_port()),
        "--dashboard-agent-grpc-port", str(free_port()),
        "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port()),
        "--disable-usage-stats", "--include-log-monitor", "false", "--block",
    ]


def start(temp_dir: Path, nodes: int = 2, cpus_per_node: int = 1,
          object_store_bytes: int = DEFAULT_OBJECT_STORE_BYTES,
          log_dir: Path | None = None) -> LocalRayCluster:
    """Start a head and ``nodes - 1`` more nodes, and wait until all of them are alive.

    ``temp_dir`` must be short: Ray puts Unix sockets under it, whose paths may not pass 107
    bytes (a pytest ``tmp_path`` is already too long).
    """
    temp_dir.mkdir(parents=True, exist_ok=True)
    log_dir = log_dir or temp_dir
    env = os.environ | {
        "RAY_USAGE_STATS_ENABLED": "0",
        # Without this a SIGTERMed node waits up to 30 s for a drain nobody needs here.
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
    }
    port = free_port()
    cluster = LocalRayCluster(address=f"{HEAD_IP}:{port}", temp_dir=temp_dir)
    try:
        for index in range(nodes):
            ip = f"127.0.0.{2 + index}"
            role = (["--head", "--port", str(port), "--include-dashboard=false",
                     "--ray-client-server-port", str(free_port()), "--temp-dir", str(temp_dir)]
                    if index == 0 else ["--address", cluster.address])
            with open(log_dir / f"ray-node-{index}.log", "wb") as log:
                cluster.nodes.append(subprocess.Popen(
                    [_ray_executable(), "start", *role, "--node-ip-address", ip,
                     *_node_args(cpus_per_node, object_store_bytes)],
                    env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True))
            _wait_for_nodes(cluster, index + 1, log_dir)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait_for_nodes(cluster: LocalRayCluster, count: int, log_dir: Path) -> None:
    """Wait until ``count`` raylets of this cluster run: ``ray start --block`` prints
    "Ray runtime started" once its node is up."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        for index, node in enumerate(cluster.nodes):
            if node.poll() is not None:
                log = (log_dir / f"ray-node-{index}.log").read_text(errors="replace")
                raise RuntimeError(f"ray start of node {index} exited with {node.returncode}:"
                                   f"\n{log[-3000:]}")
        started = sum("Ray runtime started" in (log_dir / f"ray-node-{i}.log").read_text(
            errors="replace") for i in range(len(cluster.nodes)))
        if started >= count:
            return
        time.sleep(0.5)
    raise TimeoutError(f"{count} Ray node(s) did not start within {START_TIMEOUT_SECONDS:.0f} s; "
                       f"see {log_dir}/ray-node-*.log")
