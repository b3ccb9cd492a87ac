"""The benchmark's own embedded stack: every server on a free port, state in a temporary folder.

Infrastructure (Temporal dev server as `devstack.temporal_cmd` starts it for `make run`,
plus any --dynamic-config-value given with --temporal-flag; SecantusDB on disk, nats-server -js,
localstripe) is started with the same builders as `ticketing dev` and the tests; the API (twice:
the normal expiry and a short one) and the worker run as real processes (`python -m ticketing.cli
api|worker`), configured through the environment exactly as in production, optionally from another
checkout (--code).
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench._code import import_devstack
from ticketing.settings import Settings

if TYPE_CHECKING:
    from devstack import ManagedProcess  # the shape; at run time DIR's class (below)

devstack = import_devstack()  # --code DIR's (see bench/_code.py)


def rss_kib(pid: int) -> int:
    """VmRSS of pid plus all its descendants, in KiB (0 when gone)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            with open(f"/proc/{current}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def cpu_seconds(pid: int) -> float:
    """utime + stime of pid (its threads included), in seconds (0 when gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


APP = ("api", "api-short", "worker")


@dataclass
class BenchStack:
    """`order_expiration_seconds` for the main API (`api`); `short_expiration_seconds` for a second API
    process (`api-short`) on the same worker and task queue, whose orders expire soon after they are
    created (equal-load, steady-state and scale scenarios). `code_dir`: run the API and the worker from
    that checkout (cwd and PYTHONPATH) with this interpreter. `temporal_config`: dynamic config handed to
    `temporal_cmd` (on top of its own); `temporal_flags`: KEY=VALUE pairs appended as --dynamic-config-value
    (for checkouts whose temporal_cmd takes no dynamic config)."""

    folder: Path
    order_expiration_seconds: int = 900
    short_expiration_seconds: int = 30
    code_dir: Path | None = None
    temporal_flags: list[str] = field(default_factory=list)
    temporal_config: dict[str, object] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    settings: Settings | None = None
    env: dict[str, str] = field(default_factory=dict)
    temporal_command: list[str] = field(default_factory=list)

    def _start(self, name: str, cmd: list[str], port: int, env: dict[str, str] | None = None) -> None:
        self.ports[name] = port
        self.processes[name] = devstack.start_and_wait(
            name, cmd, port, log_path=self.folder / f"{name}.log", env=env, cwd=self._cwd(name), timeout=90
        )

    def _cwd(self, name: str) -> Path | None:
        # localstripe runs as `python -m` DIR's devstack module (`ticketing.devstack` in older checkouts).
        return self.code_dir if name in (*APP, "stripe") else None

    def start(self) -> Settings:
        f = self.folder
        for name, build in (
            ("mongo", lambda p: devstack.secantus_cmd(p, f / "mongo")),
            ("nats", lambda p: devstack.nats_cmd(p, f / "nats")),
            ("stripe", lambda p: devstack.localstripe_cmd(p)),
            ("temporal", lambda p: self._temporal(p)),
        ):
            port = devstack.free_port()
            self._start(name, build(port), port)
        devstack.wait_temporal_ready(f"127.0.0.1:{self.ports['temporal']}")
        self.start_app()
        assert self.settings is not None
        return self.settings

    def _temporal(self, port: int) -> list[str]:
        options: dict[str, Any] = {"dynamic_config": self.temporal_config} if self.temporal_config else {}
        cmd = devstack.temporal_cmd(port, None, self.folder / "temporal.db", **options)
        for flag in self.temporal_flags:
            cmd += ["--dynamic-config-value", flag]
        self.temporal_command = cmd
        return cmd

    def start_app(self, tag: str | None = None) -> Settings:
        """The API (main and short-expiry) and the worker, on a database and task queue of their own."""
        tag = tag or uuid.uuid4().hex[:8]
        api_port, short_port, metrics_port = devstack.free_port(), devstack.free_port(), devstack.free_port()
        self.ports.update(api=api_port, **{"api-short": short_port}, metrics=metrics_port)
        env = {
            "APP_ENV": "test",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            "HOST": "127.0.0.1",
            "PORT": str(api_port),
            "MONGO_URL": f"mongodb://127.0.0.1:{self.ports['mongo']}",
            "MONGO_DB": f"bench_{tag}",
            "NATS_URL": f"nats://127.0.0.1:{self.ports['nats']}",
            "NATS_STREAM": "TICKETING",
            "TEMPORAL_ADDRESS": f"127.0.0.1:{self.ports['temporal']}",
            "TEMPORAL_TASK_QUEUE": f"orders-{tag}",
            "STRIPE_API_BASE": f"http://127.0.0.1:{self.ports['stripe']}",
            "STRIPE_KEY": "sk_test_bench",
            "STRIPE_WEBHOOK_SECRET": "whsec_bench",
            "JWT_KEY": "bench-jwt-key-0123456789abcdef0123456789",
            "ORDER_EXPIRATION_SECONDS": str(self.order_expiration_seconds),
            "WORKER_METRICS_PORT": str(metrics_port),
            # The payments reconciliation (every 5 min) would land in some scenario's figures.
            "RECONCILE_SCHEDULE": "false",
        }
        if self.code_dir is not None:
            env["PYTHONPATH"] = str(self.code_dir)
        env.update(self.extra_env)
        self.env = env
        python = sys.executable
        self._start("api", [python, "-m", "ticketing.cli", "api"], api_port, env)
        short = {**env, "PORT": str(short_port), "ORDER_EXPIRATION_SECONDS": str(self.short_expiration_seconds)}
        self._start("api-short", [python, "-m", "ticketing.cli", "api"], short_port, short)
        for name, port in (("api", api_port), ("api-short", short_port)):
            devstack.wait_for_http(f"http://127.0.0.1:{port}/readyz", 60, process=self.processes[name])
        worker = devstack.ManagedProcess("worker").start(
            [python, "-m", "ticketing.cli", "worker"], env=env, log_path=self.folder / "worker.log", cwd=self.code_dir
        )
        self.processes["worker"] = worker
        devstack.wait_for_port("127.0.0.1", metrics_port, 60, process=worker)
        self.settings = Settings(
            **{  # type: ignore[arg-type]
                k.lower(): v
                for k, v in env.items()
                if k not in {"HOST", "PYTHONUNBUFFERED", "LOG_LEVEL", "PYTHONPATH", "WORKER_METRICS_PORT"}
            }
        )
        return self.settings

    def stop_app(self) -> None:
        for name in ("worker", *APP):
            proc = self.processes.pop(name, None)
            if proc is not None:
                proc.stop(30)

    def restart_app(self) -> Settings:
        """Fresh API and worker processes on a fresh database and task queue (the scale scenario)."""
        self.stop_app()
        return self.start_app()

    def start_extra(
        self, name: str, cmd: list[str], env: Mapping[str, str | None], cwd: Path | None = None
    ) -> ManagedProcess:
        proc = devstack.ManagedProcess(name).start(cmd, env=env, log_path=self.folder / f"{name}.log", cwd=cwd)
        self.processes[name] = proc
        return proc

    def stop_extra(self, name: str) -> None:
        proc = self.processes.pop(name, None)
        if proc is not None:
            proc.stop(15)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    @property
    def short_api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['api-short']}"

    def pid(self, name: str) -> int:
        pid = self.processes[name].pid
        assert pid is not None
        return pid

    def rss_mib(self, name: str) -> float:
        return rss_kib(self.pid(name)) / 1024

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each server process."""
        return {name: cpu_seconds(self.pid(name)) for name in self.processes}

    def check_alive(self) -> None:
        for name, proc in self.processes.items():
            if not proc.is_running:
                raise RuntimeError(f"{name} died (exit {proc.returncode}); log: {proc.log_path}\n{proc.log_tail(20)}")

    def stop(self) -> None:
        for name in ("bare-worker", "worker", "api-short", "api", "temporal", "stripe", "nats", "mongo"):
            proc = self.processes.get(name)
            if proc is not None:
                proc.stop(10)
