"""`ticketing` command line: `api` (HTTP server), `worker` (Temporal worker), `dev` (whole local stack),
`reconcile` (money reconciliation: run once, --dry-run, --schedule)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from ticketing.settings import Settings


def run_api() -> int:
    import uvicorn

    from ticketing.logs import configure_logging
    from ticketing.settings import Settings

    settings = Settings()
    configure_logging(settings)
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=os.environ.get("HOST", "127.0.0.1"),  # containers set HOST=0.0.0.0
        port=settings.port,
        access_log=False,
        log_config=None,  # keep our JSON logging
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=10,
    )
    return _exit_before_finalization(0)  # its Temporal client's threads too (below)


def run_worker() -> int:
    from workers import worker

    asyncio.run(worker.main())
    return _exit_before_finalization(0)


def run_reconcile(args: argparse.Namespace) -> int:
    from ticketing.logs import configure_logging
    from ticketing.settings import Settings

    settings = Settings()
    configure_logging(settings)
    return _exit_before_finalization(asyncio.run(_reconcile(settings, dry=args.dry_run, schedule=args.schedule)))


def _exit_before_finalization(code: int) -> NoReturn:
    """Leave without interpreter teardown once the Temporal client is done with.

    The SDK's Rust threads can still touch the GIL while CPython finalizes, which aborts the process
    (SIGABRT, "PyGILState_Release: thread state ... must be current"; temporalio/sdk-python#300), so
    a run that succeeded would exit -6. Our output is flushed here; nothing else runs at exit.
    """
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def _reconcile(settings: Settings, *, dry: bool, schedule: bool) -> int:
    from ticketing.db import connect_db
    from ticketing.temporal import connect_temporal
    from workers import reconcile

    temporal = await connect_temporal(settings)
    if schedule:
        await reconcile.ensure_schedule(temporal, settings)
        print(
            f"schedule {settings.reconcile_schedule_id}: every {settings.reconcile_interval_seconds} s "
            f"on task queue {settings.temporal_task_queue}"
        )
        return 0
    if not dry:
        reconcile.print_result(await reconcile.run_once(temporal, settings))
        return 0
    mongo = await connect_db(settings)
    try:
        reconcile.print_plans(await reconcile.dry_run(settings, temporal))
    finally:
        await mongo.close()
    return 0


def run_dev(args: argparse.Namespace) -> int:
    # devstack/ is dev-only (a checkout's editable install has it; the wheel and the image do not).
    try:
        from devstack import DevStackOptions
        from devstack import run_dev as run_stack
    except ModuleNotFoundError as exc:
        if exc.name != "devstack":
            raise
        print(
            "ticketing dev: not available here (devstack/ is dev-only): run `make run` in a checkout", file=sys.stderr
        )
        return 2
    # Ports not given keep DevStackOptions' defaults (the parser cannot import devstack for them).
    names = ("temporal_port", "temporal_ui_port", "mongo_port", "stripe_port")
    ports = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    return run_stack(DevStackOptions(data_dir=Path(args.data_dir), **ports))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ticketing", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{api,worker,dev,reconcile}")
    sub.add_parser("api", help="run the HTTP API (uvicorn; HOST env, default 127.0.0.1, and PORT)")
    sub.add_parser("worker", help="run the Temporal worker")
    dev = sub.add_parser(
        "dev",
        help="run the whole stack locally (Temporal, MongoDB, NATS, Stripe fake, API, worker) with data in .data/",
    )
    dev.add_argument("--data-dir", default=".data", help="state and logs folder (default: .data)")
    dev.add_argument("--temporal-port", type=int)
    dev.add_argument("--temporal-ui-port", type=int)
    dev.add_argument("--mongo-port", type=int)
    dev.add_argument("--stripe-port", type=int)
    rec = sub.add_parser(
        "reconcile", help="money reconciliation with Stripe: run once now (prints the figures), or see the options"
    )
    mode = rec.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print what a run would do, as a table; change nothing")
    mode.add_argument("--schedule", action="store_true", help="create or update the Temporal Schedule, then exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "api":
            return run_api()
        if args.command == "worker":
            return run_worker()
        if args.command == "reconcile":
            return run_reconcile(args)
        return run_dev(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
