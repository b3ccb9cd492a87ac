"""`--code DIR`: the application code under test comes from another checkout (e.g. a git worktree
of an older commit), the harness from this one.

Imported by bench/run.py before anything from ticketing/, workflows/, api/...: it puts DIR first
on sys.path, so the modules the bench process itself imports (the order workflow for the burst
scenario, the settings, the dev server's command line in devstack) are DIR's, exactly
as in the API and worker processes, which run with cwd=DIR and PYTHONPATH=DIR. The `bench`
package is already imported from this checkout by then, so bench.* stays ours.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType


def _code_dir(argv: list[str]) -> Path | None:
    for i, arg in enumerate(argv):
        if arg == "--code" and i + 1 < len(argv):
            return Path(argv[i + 1]).resolve()
        if arg.startswith("--code="):
            return Path(arg.split("=", 1)[1]).resolve()
    return None


CODE_DIR = _code_dir(sys.argv[1:])
if CODE_DIR is not None:
    if not (CODE_DIR / "ticketing" / "__init__.py").is_file():
        raise SystemExit(f"--code {CODE_DIR}: not a checkout of this project (no ticketing/ package)")
    sys.path.insert(0, str(CODE_DIR))


def import_devstack() -> ModuleType:
    """The dev-stack helpers of the code under test: the top-level `devstack` package, or `ticketing.devstack`
    in a DIR from before it moved out of the runtime package. Decided by DIR's files, not by trying: this
    checkout's `devstack` is importable anyway (the editable install puts it on sys.path)."""
    if CODE_DIR is not None and not (CODE_DIR / "devstack" / "__init__.py").is_file():
        return importlib.import_module("ticketing.devstack")
    return importlib.import_module("devstack")
