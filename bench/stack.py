"""The benchmark's own embedded stack: every server on a free port, state in a temporary folder.

Infrastructure (Temporal dev server with a WAL SQLite file, SecantusDB on disk, nats-server -js,
localstripe) is started with the same builders as `ticketing dev` and the tests; the API and the
worker run as real processes (`python -m ticketing.cli api|worker`), configured through the
environment exactly as in production.
"""

from __future__ import annotations

import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ticketing.devstack import (
    ManagedProcess,
    free_port,
    localstripe_cmd,
    nats_cmd,
    secantus_cmd,
    start_and_wait,
    temporal_cmd,
    wait_for_http,
    wait_for_port,
    wait_temporal_ready,
)
from ticketing.settings import Settings


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


@dataclass
class BenchStack:
    folder: Path
    order_expiration_seconds: int = 900
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    settings: Settings | None = None

    def _start(self, name: str, cmd: list[str], port: int, env: dict[str, str] | None = None) -> None:
        self.ports[name] = port
        self.processes[name] = start_and_wait(
            name, cmd, port, log_path=self.folder / f"{name}.log", env=env, timeout=90
        )

    def start(self) -> Settings:
        f = self.folder
        for name, build in (
            ("mongo", lambda p: secantus_cmd(p, f / "mongo")),
            ("nats", lambda p: nats_cmd(p, f / "nats")),
            ("stripe", lambda p: localstripe_cmd(p)),
            ("temporal", lambda p: temporal_cmd(p, None, f / "temporal.db")),
        ):
            port = free_port()
            self._start(name, build(port), port)
        wait_temporal_ready(f"127.0.0.1:{self.ports['temporal']}")

        tag = uuid.uuid4().hex[:8]
        api_port, metrics_port = free_port(), free_port()
        self.ports["api"], self.ports["metrics"] = api_port, metrics_port
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
        }
        env.update(self.extra_env)
        self.env = env
        python = sys.executable
        self._start("api", [python, "-m", "ticketing.cli", "api"], api_port, env)
        wait_for_http(f"http://127.0.0.1:{api_port}/readyz", 60, process=self.processes["api"])
        worker = ManagedProcess("worker").start(
            [python, "-m", "ticketing.cli", "worker"], env=env, log_path=f / "worker.log"
        )
        self.processes["worker"] = worker
        wait_for_port("127.0.0.1", metrics_port, 60, process=worker)
        self.settings = Settings(
            **{k.lower(): v for k, v in env.items() if k not in {"HOST", "PYTHONUNBUFFERED", "LOG_LEVEL"}}
        )
        return self.settings

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

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
        for name in ("worker", "api", "temporal", "stripe", "nats", "mongo"):
            proc = self.processes.get(name)
            if proc is not None:
                proc.stop(10)
