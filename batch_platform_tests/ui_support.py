"""The Dagster UI as an operator runs it (`batch-platform ui`), and a client that speaks its
GraphQL.

`running_dagster_ui` starts the webserver and the daemon on 127.0.0.1 against a data directory
whose instance lives under it, as `batch-platform ui` lays it out, and stops the whole process
group afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOCATION = "batch_platform"
STARTUP_TIMEOUT_SECONDS = 180.0
SHUTDOWN_TIMEOUT_SECONDS = 30.0
# What Debian's `chromium` package installs; `make test` installs it (scripts/ensure-chromium).
CHROMIUM_CANDIDATES = ("chromium", "/usr/bin/chromium")
# Headless Chromium in a container: no sandbox (root), no GPU, no calls home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


class UIError(AssertionError):
    """The UI or its GraphQL API did not behave; the message carries the server's log tail."""


@dataclass
class DagsterUI:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def graphql(self, query: str, variables: dict[str, Any] | None = None,
                timeout: float = 60.0) -> dict[str, Any]:
        """POST a query to /graphql as the UI does; GraphQL-level errors raise."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.load(response)
        if payload.get("errors"):
            raise UIError(f"GraphQL errors: {payload['errors']}\n{self.log_tail()}")
        return payload["data"]

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "dagster dev log (tail):\n" + "\n".join(text.splitlines()[-lines:])


def chromium_path() -> str:
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise UIError("no chromium on this machine: `apt-get install -y chromium` (make test does)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening_sockets(root_pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state owned by ``root_pid`` or below."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = set(), [root_pid]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo += children.get(pid, [])
    inodes = set()
    for pid in tree:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                address, port = local.split(":")
                found.add((_address(address), int(port, 16)))
    return found


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)



@contextmanager
def running_dagster_ui(data_dir: Path) -> Iterator[DagsterUI]:
    """`batch-platform ui` (webserver + daemon on 127.0.0.1) on a free port, its instance under
    ``data_dir/dagster``; yields once the code location has loaded."""
    port = free_port()
    env = os.environ | {"BATCH_PLATFORM_DATA_DIR": str(data_dir)}
    env.pop("DAGSTER_HOME", None)  # the data directory's own instance, as a user's is
    command = [str(Path(sys.executable).with_name("batch-platform")), "ui", "--port", str(port)]
    log_path = data_dir / "dagster-dev.log"
    # `dagster dev` shuts down cleanly only on SIGINT, and a shell without job control starts
    # background jobs (CI's, say) with SIGINT ignored, which children inherit. A handled signal
    # is reset to its default in the child at exec: handle it here while starting.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with log_path.open("wb") as log:
            # Its own session: teardown signals the webserver, daemon, code server and run
            # workers together, and nothing else.
            process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    ui = DagsterUI(f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_until_ready(ui)
        yield ui
    finally:
        _stop(process)


def _wait_until_ready(ui: DagsterUI) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while not _server_answers(ui):
        _check_alive(ui, deadline, "the webserver to answer /server_info")
        time.sleep(0.25)
    while True:
        entries = ui.graphql(
            "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus"
            " locationOrLoadError { __typename ... on PythonError { message } } } } } }"
        )["workspaceOrError"]["locationEntries"]
        entry = next((e for e in entries if e["name"] == LOCATION), None)
        if entry and entry["loadStatus"] == "LOADED":
            loaded = entry["locationOrLoadError"] or {}
            if loaded.get("__typename") != "RepositoryLocation":
                raise UIError(f"code location {LOCATION} failed to load: {loaded}")
            return
        _check_alive(ui, deadline, f"code location {LOCATION} to load")
        time.sleep(0.25)


def _server_answers(ui: DagsterUI) -> bool:
    try:
        with urllib.request.urlopen(f"{ui.url}/server_info", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _check_alive(ui: DagsterUI, deadline: float, waiting_for: str) -> None:
    if ui.process.poll() is not None:
        raise UIError(f"dagster dev exited with {ui.process.returncode} while waiting for "
                      f"{waiting_for}\n{ui.log_tail()}")
    if time.monotonic() > deadline:
        raise UIError(f"timed out after {STARTUP_TIMEOUT_SECONDS:.0f}s waiting for "
                      f"{waiting_for}\n{ui.log_tail()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Ctrl-C to the group (dagster dev's clean shutdown), then SIGKILL for any straggler."""
    _signal_group(process.pid, signal.SIGINT)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=SHUTDOWN_TIMEOUT_SECONDS)
    _signal_group(process.pid, signal.SIGKILL)
    process.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):  # the whole group is already gone
        os.killpg(pgid, sig)
