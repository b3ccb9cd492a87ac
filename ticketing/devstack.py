"""The embedded development stack behind `ticketing dev` / `make run`, and the helpers tests reuse.

Everything a developer needs runs as plain child processes of one supervisor, with state kept
under `.data/` (so a second run finds the same data again):

- Temporal dev server (SQLite file `.data/temporal.db`, Web UI on 8233),
- SecantusDB (MongoDB wire protocol, WiredTiger files under `.data/mongo`),
- NATS with JetStream (reused when one already answers, else `nats-server` with `.data/nats`),
- localstripe (a fake Stripe API, state in `.data/localstripe.pickle`),
- then the API (`ticketing api`) and the Temporal worker (`ticketing worker`).

The building blocks are synchronous and free of global state so pytest fixtures can start the
same servers on free ports in temporary folders::

    port = free_port()
    mongo = start_and_wait("mongo", secantus_cmd(port, tmp_path / "mongo"), port, log_path=tmp_path / "mongo.log")
    ...
    mongo.stop()

Every child runs in its own session/process group: stopping sends SIGTERM to the whole group,
waits, then SIGKILLs whatever is left, so no grandchild survives.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any
from urllib.parse import urlencode, urlsplit

LOCALHOST = "127.0.0.1"
DEFAULT_TEMPORAL_ADDRESS = "127.0.0.1:7233"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_MONGO_PORT = 27017
DEFAULT_TEMPORAL_PORT = 7233
DEFAULT_TEMPORAL_UI_PORT = 8233
DEFAULT_STRIPE_PORT = 8420
SEARCH_ATTRIBUTES = {"OrderStatus": "Keyword", "UserId": "Keyword", "TicketId": "Keyword"}

NATS_INSTALL_HINT = (
    "nats-server is not installed. On Debian/Ubuntu: `sudo apt-get install -y nats-server` "
    "(or as root: `apt-get update && apt-get install -y nats-server`); "
    "elsewhere see https://docs.nats.io/running-a-nats-service/introduction/installation"
)


# --------------------------------------------------------------------------------------------
# Small network helpers
# --------------------------------------------------------------------------------------------


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port nobody listens on right now (the OS picks it; tiny race until it is bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts a TCP connection on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    *,
    what: str,
    process: ManagedProcess | None = None,
    abort: Callable[[], bool] | None = None,
    interval: float = 0.1,
) -> None:
    """Poll `predicate` until it is true.

    Raises TimeoutError after `timeout` seconds, ProcessDied when `process` exits first (with the
    tail of its log in the message), Aborted when `abort()` becomes true.
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if abort is not None and abort():
            raise Aborted(what)
        if process is not None and not process.is_running:
            raise ProcessDied(process, f"{process.name} exited with code {process.returncode} before {what}")
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout:.0f}s waiting for {what}"
            if process is not None and process.log_path is not None:
                msg += f"\n--- last lines of {process.log_path} ---\n{process.log_tail()}"
            raise TimeoutError(msg)
        time.sleep(interval)


def wait_for_port(
    host: str,
    port: int,
    timeout: float = 30.0,
    *,
    process: ManagedProcess | None = None,
    abort: Callable[[], bool] | None = None,
) -> None:
    """Wait until host:port accepts TCP connections (see `wait_until` for the errors)."""
    wait_until(
        lambda: port_open(host, port),
        timeout,
        what=f"{host}:{port} to accept connections",
        process=process,
        abort=abort,
    )


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """True when GET url answers with a 2xx status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - local http URLs only
            return 200 <= int(resp.status) < 300
    except (OSError, urllib.error.URLError, ValueError):
        return False


def wait_for_http(
    url: str,
    timeout: float = 30.0,
    *,
    process: ManagedProcess | None = None,
    abort: Callable[[], bool] | None = None,
) -> None:
    """Wait until GET url answers 2xx."""
    wait_until(lambda: http_ok(url), timeout, what=f"{url} to answer", process=process, abort=abort, interval=0.2)


def host_port(url: str, default_port: int) -> tuple[str, int]:
    """(host, port) of a nats:// / mongodb:// / http:// URL or a bare host:port (first host only)."""
    if "://" not in url:
        url = "tcp://" + url
    netloc = urlsplit(url).netloc.rsplit("@", 1)[-1].split(",")[0]
    parsed = urlsplit("tcp://" + netloc)
    return parsed.hostname or LOCALHOST, parsed.port or default_port


def nats_info(url: str = DEFAULT_NATS_URL, timeout: float = 1.0) -> dict[str, Any] | None:
    """The server's INFO object when a NATS server answers at url (TCP connect + INFO line), else None."""
    host, port = host_port(url, 4222)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            data = b""
            while b"\r\n" not in data and len(data) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    line = data.split(b"\r\n", 1)[0]
    if not line.startswith(b"INFO "):
        return None
    try:
        info = json.loads(line[5:])
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def is_local_host(host: str) -> bool:
    return host in {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


# --------------------------------------------------------------------------------------------
# Binaries and command builders
# --------------------------------------------------------------------------------------------


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
    for key, kind in SEARCH_ATTRIBUTES.items():
        cmd += ["--search-attribute", f"{key}={kind}"]
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

    Runs through this module's launcher instead of the bare `localstripe` script, because the
    script binds every interface over IPv6 (fails where IPv6 is off) and always loads/saves its
    state at the shared `/tmp/localstripe.pickle` (parallel test servers would clobber each
    other, and one truncated file makes every later start crash). `state_file=None` keeps the
    state in memory only.
    """
    cmd = [sys.executable, "-m", "ticketing.devstack", "localstripe", "--port", str(port)]
    if state_file is not None:
        cmd += ["--state-file", str(state_file)]
    return cmd


# --------------------------------------------------------------------------------------------
# Managed child processes
# --------------------------------------------------------------------------------------------


class Aborted(Exception):
    """A wait was cut short because a shutdown was requested."""


class ProcessDied(RuntimeError):
    def __init__(self, process: ManagedProcess, message: str) -> None:
        if process.log_path is not None:
            message += f"\n--- last lines of {process.log_path} ---\n{process.log_tail()}"
        super().__init__(message)
        self.process = process


_PR_SET_PDEATHSIG = 1


def _pdeathsig_preexec(parent_pid: int) -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when its parent dies (no orphan even on SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class ManagedProcess:
    """One child process in its own session (process group), output appended to a log file.

    `start(cmd, env, log_path)` merges `env` over os.environ (a None value removes a variable).
    `die_with_parent` (default: when started from the main thread) makes Linux send SIGTERM to
    the child if this Python process dies, even by SIGKILL. It is tied to the starting thread,
    hence off by default elsewhere.
    """

    def __init__(self, name: str = "process") -> None:
        self.name = name
        self.cmd: list[str] = []
        self.log_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.killed = False  # True when stop() had to fall back to SIGKILL

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.name} pid={self.pid} running={self.is_running}>"

    def start(
        self,
        cmd: Sequence[str],
        env: Mapping[str, str | None] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        *,
        cwd: str | os.PathLike[str] | None = None,
        die_with_parent: bool | None = None,
    ) -> ManagedProcess:
        if self._proc is not None and self._proc.poll() is None:
            raise RuntimeError(f"{self.name} is already running (pid {self._proc.pid})")
        self.cmd = [str(part) for part in cmd]
        self.killed = False
        full_env = dict(os.environ)
        for key, value in (env or {}).items():
            if value is None:
                full_env.pop(key, None)
            else:
                full_env[key] = value
        if die_with_parent is None:
            die_with_parent = threading.current_thread() is threading.main_thread()
        preexec = _pdeathsig_preexec(os.getpid()) if die_with_parent else None

        out: IO[bytes] | None = None
        if log_path is not None:
            self.log_path = Path(log_path)
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = self.log_path.open("ab")
            stamp = dt.datetime.now().astimezone().isoformat(timespec="seconds")
            out.write(f"\n===== {stamp} start {self.name}: {' '.join(self.cmd)}\n".encode())
            out.flush()
        try:
            self._proc = subprocess.Popen(
                self.cmd,
                env=full_env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if out is not None else None,
                start_new_session=True,
                preexec_fn=preexec,
            )
        finally:
            if out is not None:
                out.close()  # the child holds its own copy
        return self

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def _signal_group(self, sig: signal.Signals) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)  # start_new_session: pgid == pid

    def send_signal(self, sig: signal.Signals) -> None:
        """Send sig to the whole process group (if the leader still runs)."""
        if self.is_running:
            self._signal_group(sig)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the process to exit; its return code, or None if still running after timeout."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the group, wait up to `timeout` s, then SIGKILL. Returns the exit code."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                self._signal_group(signal.SIGKILL)
                self._proc.wait()
        self._signal_group(signal.SIGKILL)  # whatever of the group outlived its leader
        return self._proc.returncode

    def kill(self) -> None:
        """SIGKILL the whole group at once and reap the leader."""
        if self._proc is None:
            return
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(5)

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_and_wait(
    name: str,
    cmd: Sequence[str],
    port: int,
    *,
    host: str = LOCALHOST,
    log_path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str | None] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
) -> ManagedProcess:
    """Start cmd and wait until host:port accepts connections; on failure the process is stopped."""
    proc = ManagedProcess(name).start(cmd, env=env, log_path=log_path, cwd=cwd)
    try:
        wait_for_port(host, port, timeout, process=proc)
    except BaseException:
        proc.stop(5)
        raise
    return proc


# --------------------------------------------------------------------------------------------
# localstripe launcher (python -m ticketing.devstack localstripe --port P [--state-file F])
# --------------------------------------------------------------------------------------------


def run_localstripe(port: int, state_file: str | None, host: str = LOCALHOST) -> None:
    import logging
    import pickle

    from aiohttp import web
    from localstripe import resources, server

    store_cls: Any = resources.Store

    def load(self: dict[str, Any]) -> None:
        if state_file is None:
            return
        try:
            with open(state_file, "rb") as fh:
                old = pickle.load(fh)  # noqa: S301 - our own file, written below
        except FileNotFoundError:
            return
        except Exception as exc:  # a truncated/corrupt file must not prevent the fake from starting
            print(f"localstripe: ignoring unreadable state file {state_file}: {exc!r}", file=sys.stderr)
            return
        self.clear()
        self.update(old)

    def dump(self: dict[str, Any]) -> None:
        if state_file is None:
            return
        tmp = f"{state_file}.tmp"
        with open(tmp, "wb") as fh:
            pickle.dump(dict(self), fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, state_file)

    store_cls.try_load_from_disk = load
    store_cls.dump_to_disk = dump
    resources.store.try_load_from_disk()

    access = logging.getLogger("aiohttp.access")
    access.setLevel(logging.DEBUG)
    access.addHandler(logging.StreamHandler())
    print(f"localstripe listening on http://{host}:{port}", file=sys.stderr, flush=True)
    web.run_app(server.app, host=host, port=port, access_log=access, print=None)


# --------------------------------------------------------------------------------------------
# The dev stack supervisor
# --------------------------------------------------------------------------------------------


@dataclass
class DevStackOptions:
    data_dir: Path = Path(".data")
    temporal_port: int = DEFAULT_TEMPORAL_PORT
    temporal_ui_port: int = DEFAULT_TEMPORAL_UI_PORT
    mongo_port: int = DEFAULT_MONGO_PORT
    stripe_port: int = DEFAULT_STRIPE_PORT
    start_timeout: float = 90.0
    stop_timeout: float = 12.0


def _explicit_settings() -> tuple[Any, set[str]]:
    """Settings as the children will see them, and which fields the environment/.env set explicitly."""
    from ticketing.settings import Settings

    settings = Settings()
    return settings, set(settings.model_fields_set)


class DevStack:
    """Starts the embedded stack, supervises it, stops it in reverse order."""

    def __init__(self, options: DevStackOptions | None = None, out: IO[str] | None = None) -> None:
        self.opts = options or DevStackOptions()
        self.out = out or sys.stdout
        self.data_dir = self.opts.data_dir
        self.logs_dir = self.data_dir / "logs"
        self.children: list[ManagedProcess] = []
        self.app_children: set[str] = set()
        self.child_env: dict[str, str] = {}
        self._stop_requested = False
        self._stopping = False
        self._lock_fh: IO[str] | None = None

    # -- output ---------------------------------------------------------------------------
    def say(self, msg: str) -> None:
        print(msg, file=self.out, flush=True)

    def _rel(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(Path.cwd()))
        except ValueError:
            return str(path)

    # -- signals --------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._stopping or self._stop_requested:
            self.say(f"\n{signal.Signals(signum).name} again: killing everything now")
            for proc in self.children:
                proc._signal_group(signal.SIGKILL)
            return
        self.say(f"\n{signal.Signals(signum).name} received: stopping (again to kill at once)")
        self._stop_requested = True

    def _aborted(self) -> bool:
        return self._stop_requested

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # -- lifecycle ------------------------------------------------------------------------
    def _acquire_lock(self) -> None:
        import fcntl

        self.data_dir.mkdir(parents=True, exist_ok=True)
        fh = (self.data_dir / "dev.lock").open("a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise RuntimeError(
                f"another `ticketing dev` already runs with {self._rel(self.data_dir)}/ (stop it first)"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._lock_fh = fh

    def _spawn(self, name: str, cmd: Sequence[str], env: Mapping[str, str] | None = None) -> ManagedProcess:
        log_path = self.logs_dir / f"{name}.log"
        proc = ManagedProcess(name).start(cmd, env=env, log_path=log_path, die_with_parent=True)
        self.children.append(proc)
        self.say(f"  {name:<9} started (pid {proc.pid}), log: {self._rel(log_path)}")
        return proc

    def _wait_port(self, proc: ManagedProcess | None, host: str, port: int, what: str) -> None:
        wait_until(lambda: port_open(host, port), self.opts.start_timeout, what=what, process=proc, abort=self._aborted)

    def run(self) -> int:
        """Start everything, supervise until a signal or a crash; the process exit code."""
        with self._signals():
            try:
                self._acquire_lock()
                self.logs_dir.mkdir(parents=True, exist_ok=True)
                self._start_all()
                return self._supervise()
            except Aborted:
                return 0
            except (ProcessDied, TimeoutError, RuntimeError, FileNotFoundError, ValueError) as exc:
                self.say(f"\nERROR: {exc}")
                return 1
            finally:
                self.stop_all()
                if self._lock_fh is not None:
                    self._lock_fh.close()

    def _start_all(self) -> None:
        settings, explicit = _explicit_settings()
        env: dict[str, str] = {"APP_ENV": settings.app_env, "PYTHONUNBUFFERED": "1"}
        self.say(f"ticketing dev: data in {self._rel(self.data_dir)}/, logs in {self._rel(self.logs_dir)}/")

        temporal_address, temporal_ui, temporal_proc = self._start_temporal(settings, explicit)
        mongo_url, mongo_proc = self._start_mongo(settings, explicit)
        nats_url, nats_proc = self._start_nats(settings)
        stripe_base, stripe_proc = self._start_stripe(settings, explicit)
        env.update(TEMPORAL_ADDRESS=temporal_address, MONGO_URL=mongo_url, NATS_URL=nats_url)
        if stripe_base is not None:
            env["STRIPE_API_BASE"] = stripe_base
            if "stripe_js_url" not in explicit:  # the buyer's page loads localstripe's fake Stripe.js
                env["STRIPE_JS_URL"] = f"{stripe_base}/js.stripe.com/v3/"

        # Wait for everything that was started or reused (they boot in parallel).
        t_host, t_port = host_port(temporal_address, 7233)
        self._wait_port(temporal_proc, t_host, t_port, f"Temporal at {temporal_address}")
        if temporal_proc is not None and self.opts.temporal_ui_port:
            # The UI comes up after the frontend finished starting: a better "ready" signal.
            self._wait_port(temporal_proc, LOCALHOST, self.opts.temporal_ui_port, "the Temporal Web UI")
        m_host, m_port = host_port(mongo_url, DEFAULT_MONGO_PORT)
        if not mongo_url.startswith("mongodb+srv://"):
            self._wait_port(mongo_proc, m_host, m_port, f"MongoDB at {m_host}:{m_port}")
        wait_until(
            lambda: nats_info(nats_url) is not None,
            self.opts.start_timeout,
            what=f"NATS at {nats_url}",
            process=nats_proc,
            abort=self._aborted,
        )
        if stripe_proc is not None:
            self._wait_port(stripe_proc, LOCALHOST, self.opts.stripe_port, "localstripe")

        api_port = int(settings.port)
        if port_open(LOCALHOST, api_port):
            raise RuntimeError(f"port {api_port} is already in use: stop whatever listens there or set PORT")
        if stripe_base is not None:
            self._register_stripe_webhook(stripe_base, api_port, str(settings.stripe_webhook_secret))
        self.child_env = env
        api = self._spawn("api", [sys.executable, "-m", "ticketing.cli", "api"], env)
        worker = self._spawn("worker", [sys.executable, "-m", "ticketing.cli", "worker"], env)
        self.app_children = {"api", "worker"}
        wait_for_http(f"http://127.0.0.1:{api_port}/healthz", self.opts.start_timeout, process=api, abort=self._aborted)
        if not worker.is_running:
            raise ProcessDied(worker, f"worker exited with code {worker.returncode} during start-up")

        self.say("")
        self.say(f"API: http://127.0.0.1:{api_port} (docs: http://127.0.0.1:{api_port}/docs)")
        self.say(f"Web: http://127.0.0.1:{api_port}/ (test cards: 4242424242424242, 3-D Secure 4000002760003184)")
        self.say(f"Temporal UI: {temporal_ui}" if temporal_ui else f"Temporal: {temporal_address} (external)")
        self.say("Press Ctrl-C to stop.")

    def _start_temporal(self, settings: Any, explicit: set[str]) -> tuple[str, str | None, ManagedProcess | None]:
        address = str(settings.temporal_address)
        if "temporal_address" in explicit and address != DEFAULT_TEMPORAL_ADDRESS:
            self.say(f"  temporal  using TEMPORAL_ADDRESS={address} (not started)")
            return address, None, None
        address = f"{LOCALHOST}:{self.opts.temporal_port}"
        ui = f"http://127.0.0.1:{self.opts.temporal_ui_port}"
        if port_open(LOCALHOST, self.opts.temporal_port):
            self.say(f"  temporal  something already answers on {address}: reusing it (not started)")
            return address, ui, None
        cmd = temporal_cmd(
            self.opts.temporal_port,
            self.opts.temporal_ui_port,
            self.data_dir / "temporal.db",
            namespace=str(settings.temporal_namespace),
        )
        return address, ui, self._spawn("temporal", cmd)

    def _start_mongo(self, settings: Any, explicit: set[str]) -> tuple[str, ManagedProcess | None]:
        if "mongo_url" in explicit:
            url = str(settings.mongo_url)
            self.say(f"  mongo     using MONGO_URL={_redact(url)} (not started)")
            return url, None
        port = self.opts.mongo_port
        url = f"mongodb://127.0.0.1:{port}"
        if port_open(LOCALHOST, port):
            self.say(f"  mongo     something already answers on 127.0.0.1:{port}: reusing it (not started)")
            return url, None
        return url, self._spawn("mongo", secantus_cmd(port, self.data_dir / "mongo"))

    def _start_nats(self, settings: Any) -> tuple[str, ManagedProcess | None]:
        url = str(settings.nats_url)
        info = nats_info(url)
        if info is not None:
            note = "" if info.get("jetstream") else " (WARNING: JetStream looks disabled there)"
            self.say(f"  nats      {url} answers: reusing it{note}")
            return url, None
        host, port = host_port(url, 4222)
        if not is_local_host(host):
            raise RuntimeError(f"NATS_URL={url} does not answer and is not local, so it cannot be started here")
        (self.data_dir / "nats").mkdir(parents=True, exist_ok=True)
        return url, self._spawn("nats", nats_cmd(port, self.data_dir / "nats"))

    def _start_stripe(self, settings: Any, explicit: set[str]) -> tuple[str | None, ManagedProcess | None]:
        if settings.stripe_api_base:
            self.say(f"  stripe    using STRIPE_API_BASE={settings.stripe_api_base} (not started)")
            return None, None
        from ticketing.settings import DEV_STRIPE_KEY

        key = str(settings.stripe_key)
        # DEV_STRIPE_KEY looks like a test key but is only the dev placeholder that goes with localstripe.
        if "stripe_key" in explicit and key.startswith(("sk_live_", "sk_test_")) and key != DEV_STRIPE_KEY:
            self.say("  stripe    STRIPE_KEY is a real key and STRIPE_API_BASE is unset: using the real Stripe API")
            return None, None
        port = self.opts.stripe_port
        base = f"http://127.0.0.1:{port}"
        if port_open(LOCALHOST, port):
            self.say(f"  stripe    something already answers on {base}: reusing it as the Stripe API (not started)")
            return base, None
        return base, self._spawn("stripe", localstripe_cmd(port, self.data_dir / "localstripe.pickle"))

    def _register_stripe_webhook(self, stripe_base: str, api_port: int, secret: str) -> None:
        """localstripe delivers payment_intent.* events, signed like Stripe's, to the API's webhook:
        a 3-D Secure payment confirmed in the browser completes its order as in production."""
        form = [
            ("url", f"http://127.0.0.1:{api_port}/api/payments/webhook"),
            ("secret", secret),
            ("events[]", "payment_intent.succeeded"),
            ("events[]", "payment_intent.payment_failed"),
        ]
        request = urllib.request.Request(  # noqa: S310 - the local fake's URL
            f"{stripe_base}/_config/webhooks/ticketing-dev", data=urlencode(form).encode(), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=5):  # noqa: S310
                pass
        except (OSError, urllib.error.URLError) as exc:
            self.say(f"  stripe    WARNING: could not register the webhook at {stripe_base} ({exc})")

    def _supervise(self) -> int:
        while not self._stop_requested:
            for proc in self.children:
                if not proc.is_running:
                    code = proc.returncode
                    kind = "crashed" if proc.name in self.app_children else "exited unexpectedly"
                    self.say(f"\nERROR: {proc.name} {kind} ({describe_exit(code)}); stopping everything.")
                    if proc.log_path is not None:
                        self.say(f"--- last lines of {self._rel(proc.log_path)} ---\n{proc.log_tail(30)}\n---")
                    return 1
            time.sleep(0.2)
        return 0

    def stop_all(self) -> None:
        """Stop every child in reverse start order (SIGTERM, wait, SIGKILL)."""
        self._stopping = True
        if any(proc.is_running for proc in self.children):
            self.say("stopping: " + ", ".join(p.name for p in reversed(self.children) if p.is_running))
        for proc in reversed(self.children):
            was_running = proc.is_running
            code = proc.stop(self.opts.stop_timeout)
            if was_running and proc.killed:
                self.say(f"  {proc.name:<9} did not stop within {self.opts.stop_timeout:.0f}s: killed")
            elif was_running:
                self.say(f"  {proc.name:<9} stopped ({describe_exit(code)})")


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def run_dev(options: DevStackOptions | None = None) -> int:
    """Entry point of `ticketing dev`."""
    return DevStack(options).run()


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ticketing.devstack")
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("localstripe", help="run localstripe on 127.0.0.1 with its state in --state-file")
    ls.add_argument("--port", type=int, default=DEFAULT_STRIPE_PORT)
    ls.add_argument("--state-file", default=None, help="persist the fake's state here (default: memory only)")
    args = parser.parse_args(argv)
    if args.command == "localstripe":
        run_localstripe(args.port, args.state_file)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
