"""`python -m devstack localstripe --port P [--state-file F]` (what `localstripe_cmd` runs)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from devstack.localstripe import run_localstripe
from devstack.net import DEFAULT_STRIPE_PORT


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack")
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
