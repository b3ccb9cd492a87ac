"""Network probes of the dev stack (no processes, no waiting): free ports, open ports, URLs, NATS INFO."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

LOCALHOST = "127.0.0.1"
# Where `make run` expects (or starts) each server.
DEFAULT_TEMPORAL_ADDRESS = "127.0.0.1:7233"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_MONGO_PORT = 27017
DEFAULT_TEMPORAL_PORT = 7233
DEFAULT_TEMPORAL_UI_PORT = 8233
DEFAULT_STRIPE_PORT = 8420


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


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """True when GET url answers with a 2xx status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - local http URLs only
            return 200 <= int(resp.status) < 300
    except (OSError, urllib.error.URLError, ValueError):
        return False


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
