"""The layers of docs/architecture.md, enforced: which top-level package may import which.
A new import across a layer boundary fails here, not in review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("api", "workflows", "activities", "ticketing", "workers", "devstack")

# package -> the project packages its modules may import (itself included)
ALLOWED: dict[str, set[str]] = {
    "activities": {"activities", "ticketing"},  # adapters: MongoDB, NATS, Stripe
    "workflows": {"workflows", "activities", "ticketing"},  # activities only as method references
    "api": {"api", "ticketing", "workflows"},  # routes -> service; workflow names for handles
    "ticketing": {"ticketing"},
    "workers": {"workers", "workflows", "activities", "ticketing"},
    "devstack": {"devstack", "ticketing"},  # dev-only: runs the runtime's processes, never the reverse
}
# the two modules that sit above their package's layer, on purpose
EXCEPTIONS: dict[str, set[str]] = {
    "ticketing/order_service.py": {"workflows"},  # starts, pays and cancels through the workflow
    "ticketing/cli.py": {"api", "workers", "devstack"},  # the process entry point (`ticketing api|worker|dev`)
}


def imported_packages(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(LAYERS)


def modules() -> list[Path]:
    return sorted(p for layer in LAYERS for p in (ROOT / layer).rglob("*.py"))


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_respect_the_layers(path: Path):
    rel = str(path.relative_to(ROOT))
    layer = rel.split("/")[0]
    allowed = ALLOWED[layer] | EXCEPTIONS.get(rel, set())
    assert imported_packages(path) <= allowed, f"{rel} imports {sorted(imported_packages(path) - allowed)}"


def test_the_rule_sees_a_violation(tmp_path: Path):
    bad = tmp_path / "bad.py"
    bad.write_text("from api.orders import router\nimport workers.worker\n")
    assert imported_packages(bad) == {"api", "workers"}


def test_cli_imports_devstack_only_for_ticketing_dev():
    """devstack/ is not in the image: `ticketing api|worker` must not import it when the module loads."""
    cli = ast.parse((ROOT / "ticketing" / "cli.py").read_text())
    top_level = [ast.unparse(node) for node in cli.body if isinstance(node, ast.Import | ast.ImportFrom)]
    assert not [line for line in top_level if "devstack" in line]
