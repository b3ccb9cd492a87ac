"""The localstripe launcher (`python -m devstack localstripe --port P [--state-file F]`): localstripe
on one IPv4 address, with its state in a file of our choosing written atomically."""

from __future__ import annotations

import os
import sys
from typing import Any

from devstack.net import LOCALHOST


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
