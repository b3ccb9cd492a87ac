"""Where the binaries are, and the command lines of the servers (`make run`, the tests and the bench
start them the same way)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from devstack.net import LOCALHOST

NATS_INSTALL_HINT = (
    "nats-server is not installed. On Debian/Ubuntu: `sudo apt-get install -y nats-server` "
    "(or as root: `apt-get update && apt-get install -y nats-server`); "
    "elsewhere see https://docs.nats.io/running-a-nats-service/introduction/installation"
)


def venv_bin_dir() -> Path:
    """The bin folder of the running interpreter (the project's .venv/bin under `make`)."""
    return Path(sys.executable).parent


def find_binary(name: str, hint: str | None = None) -> str:
    """Absolute path of `name`: the venv's bin dir first, then PATH, then the sbin folders Debian uses."""
    candidate = venv_bin_dir() / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/local/bin", "/usr/bin"):
        path = Path(folder) / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    raise FileNotFoundError(hint or f"{name} not found in {venv_bin_dir()} or on PATH (run `make install`)")


def wait_temporal_ready(address: str, timeout: float = 60) -> None:
    """The frontend's port opens before it serves: wait for its health check to pass."""
    cmd = [find_binary("temporal"), "operator", "cluster", "health", "--address", address]
    deadline = time.monotonic() + timeout
    while subprocess.run(cmd, capture_output=True, check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"Temporal at {address} not healthy after {timeout} s")
        time.sleep(0.2)


# The dev server's dynamic config (measured in bench/README.md):
DEV_SERVER_CONFIG: dict[str, object] = {
    # One task-queue partition: with one worker process, 4 partitions (the default) only add
    # forwarding between partitions to every poll and task.
    "matching.numTaskqueueReadPartitions": 1,
    "matching.numTaskqueueWritePartitions": 1,
}


def search_attributes() -> dict[str, str]:
    """The app's search attributes (ticketing.temporal) as the CLI spells their types: {"OrderStatus": "Keyword"}."""
    # Imported here: ticketing.temporal (temporalio) takes ~2 s to import; `python -m devstack localstripe` need not.
    from ticketing.temporal import SEARCH_ATTRIBUTES

    # SearchAttributeIndexedValueType.KEYWORD_LIST -> "KeywordList"
    return {
        key.name: "".join(word.title() for word in key.indexed_value_type.name.split("_")) for key in SEARCH_ATTRIBUTES
    }


def temporal_cmd(
    port: int,
    ui_port: int | None,
    db_file: str | os.PathLike[str] | None,
    *,
    host: str = LOCALHOST,
    namespace: str | None = None,
    log_level: str = "warn",
    dynamic_config: dict[str, object] | None = None,
) -> list[str]:
    """`temporal server start-dev` on host:port with the project's search attributes.

    `ui_port=None` disables the Web UI (headless); `db_file=None` keeps everything in memory.
    The HTTP API and metrics ports are left to the server, which picks free ones.
    `dynamic_config` adds to / overrides DEV_SERVER_CONFIG.
    """
    cmd = [find_binary("temporal"), "server", "start-dev", "--ip", host, "--port", str(port)]
    if ui_port is None:
        cmd.append("--headless")
    else:
        cmd += ["--ui-port", str(ui_port)]
    if db_file is not None:
        # With SQLite's defaults (rollback journal, synchronous=FULL) every history write is an
        # fsync'd journal round trip: measured ~30x slower. WAL + synchronous=NORMAL is fast and
        # still durable across process restarts (only an OS crash/power loss can lose the last
        # commits), which is exactly what a dev server needs.
        cmd += [
            "--db-filename", str(db_file),
            "--sqlite-pragma", "journal_mode=wal",
            "--sqlite-pragma", "synchronous=normal",
        ]  # fmt: skip
    for name, kind in search_attributes().items():
        cmd += ["--search-attribute", f"{name}={kind}"]
    for key, value in {**DEV_SERVER_CONFIG, **(dynamic_config or {})}.items():
        cmd += ["--dynamic-config-value", f"{key}={json.dumps(value)}"]
    if namespace and namespace != "default":
        cmd += ["--namespace", namespace]
    cmd += ["--log-level", log_level]
    return cmd


def secantus_cmd(port: int, storage_path: str | os.PathLike[str], *, host: str = LOCALHOST) -> list[str]:
    """SecantusDB (MongoDB wire protocol) on host:port; `storage_path=":memory:"` for a throwaway store."""
    return [find_binary("secantusd-py"), "--host", host, "--port", str(port), "--storage-path", str(storage_path)]


def nats_cmd(port: int, store_dir: str | os.PathLike[str], *, host: str = LOCALHOST) -> list[str]:
    """nats-server with JetStream on host:port, JetStream files under store_dir."""
    return [find_binary("nats-server", NATS_INSTALL_HINT), "-js", "-a", host, "-p", str(port), "-sd", str(store_dir)]


def localstripe_cmd(port: int, state_file: str | os.PathLike[str] | None = None) -> list[str]:
    """localstripe (fake Stripe API) on 127.0.0.1:port.

    Runs through devstack's launcher (devstack/localstripe.py) instead of the bare `localstripe` script, because the
    script binds every interface over IPv6 (fails where IPv6 is off) and always loads/saves its
    state at the shared `/tmp/localstripe.pickle` (parallel test servers would clobber each
    other, and one truncated file makes every later start crash). `state_file=None` keeps the
    state in memory only.
    """
    cmd = [sys.executable, "-m", "devstack", "localstripe", "--port", str(port)]
    if state_file is not None:
        cmd += ["--state-file", str(state_file)]
    return cmd
