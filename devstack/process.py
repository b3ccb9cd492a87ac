"""Managed child processes (own session, log file, SIGTERM then SIGKILL of the whole group) and the
waits that watch them: a wait fails fast, with the log's tail, when the process it waits for dies."""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from devstack.net import LOCALHOST, http_ok, port_open


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


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"by {signal.Signals(-code).name}"
    return f"exit code {code}"


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


def wait_for_http(
    url: str,
    timeout: float = 30.0,
    *,
    process: ManagedProcess | None = None,
    abort: Callable[[], bool] | None = None,
) -> None:
    """Wait until GET url answers 2xx."""
    wait_until(lambda: http_ok(url), timeout, what=f"{url} to answer", process=process, abort=abort, interval=0.2)
