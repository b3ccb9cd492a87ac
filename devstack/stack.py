"""The supervisor behind `ticketing dev` / `make run`: starts the servers (or reuses those that answer),
then the API and the worker, supervises them and stops everything in reverse order."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any
from urllib.parse import urlencode, urlsplit

from devstack.commands import localstripe_cmd, nats_cmd, secantus_cmd, temporal_cmd
from devstack.net import (
    DEFAULT_MONGO_PORT,
    DEFAULT_STRIPE_PORT,
    DEFAULT_TEMPORAL_ADDRESS,
    DEFAULT_TEMPORAL_PORT,
    DEFAULT_TEMPORAL_UI_PORT,
    LOCALHOST,
    host_port,
    is_local_host,
    nats_info,
    port_open,
)
from devstack.process import Aborted, ManagedProcess, ProcessDied, describe_exit, wait_for_http, wait_until


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


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def run_dev(options: DevStackOptions | None = None) -> int:
    """Entry point of `ticketing dev`."""
    return DevStack(options).run()
