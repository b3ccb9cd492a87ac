"""The embedded development stack behind `make run` / `ticketing dev`, and the helpers the tests and the
bench reuse. Dev-only: not in the wheel nor the production image (pyproject's `packages`, Dockerfile).

Everything a developer needs runs as plain child processes of one supervisor (devstack/stack.py),
with state kept under `.data/` (so a second run finds the same data again):

- Temporal dev server (SQLite file `.data/temporal.db`, Web UI on 8233),
- SecantusDB (MongoDB wire protocol, WiredTiger files under `.data/mongo`),
- NATS with JetStream (reused when one already answers, else `nats-server` with `.data/nats`),
- localstripe (a fake Stripe API, state in `.data/localstripe.pickle`),
- then the API (`ticketing api`) and the Temporal worker (`ticketing worker`).

The building blocks (net.py probes, commands.py command lines, process.py children and waits) are
synchronous and free of global state so pytest fixtures can start the same servers on free ports in
temporary folders::

    port = free_port()
    mongo = start_and_wait("mongo", secantus_cmd(port, tmp_path / "mongo"), port, log_path=tmp_path / "mongo.log")
    ...
    mongo.stop()

Every child runs in its own session/process group: stopping sends SIGTERM to the whole group,
waits, then SIGKILLs whatever is left, so no grandchild survives.

Only the standard library is imported at module level, so `python -m devstack localstripe` starts fast.
"""

from devstack.commands import (
    DEV_SERVER_CONFIG,
    find_binary,
    localstripe_cmd,
    nats_cmd,
    secantus_cmd,
    temporal_cmd,
    venv_bin_dir,
    wait_temporal_ready,
)
from devstack.net import (
    DEFAULT_MONGO_PORT,
    DEFAULT_NATS_URL,
    DEFAULT_STRIPE_PORT,
    DEFAULT_TEMPORAL_ADDRESS,
    DEFAULT_TEMPORAL_PORT,
    DEFAULT_TEMPORAL_UI_PORT,
    LOCALHOST,
    free_port,
    host_port,
    http_ok,
    is_local_host,
    nats_info,
    port_open,
)
from devstack.process import (
    Aborted,
    ManagedProcess,
    ProcessDied,
    describe_exit,
    start_and_wait,
    wait_for_http,
    wait_for_port,
    wait_until,
)
from devstack.stack import DevStack, DevStackOptions, run_dev

__all__ = [
    "DEFAULT_MONGO_PORT",
    "DEFAULT_NATS_URL",
    "DEFAULT_STRIPE_PORT",
    "DEFAULT_TEMPORAL_ADDRESS",
    "DEFAULT_TEMPORAL_PORT",
    "DEFAULT_TEMPORAL_UI_PORT",
    "DEV_SERVER_CONFIG",
    "LOCALHOST",
    "Aborted",
    "DevStack",
    "DevStackOptions",
    "ManagedProcess",
    "ProcessDied",
    "describe_exit",
    "find_binary",
    "free_port",
    "host_port",
    "http_ok",
    "is_local_host",
    "localstripe_cmd",
    "nats_cmd",
    "nats_info",
    "port_open",
    "run_dev",
    "secantus_cmd",
    "start_and_wait",
    "temporal_cmd",
    "venv_bin_dir",
    "wait_for_http",
    "wait_for_port",
    "wait_temporal_ready",
    "wait_until",
]
