"""Reading ``scripts/run.sh`` (``make run``) from another program: its output up to a
marker, and the demo object it prints (site, API key, customers, ``portal_url``).
Used by the Makefile's tests and ``make screenshots``."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any


def read_until(proc: subprocess.Popen[str], marker: str, timeout: float) -> list[str]:
    """Lines of ``proc``'s stdout up to and including the first holding ``marker``."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("run.sh ended early:\n" + "".join(lines))
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError(f"no {marker!r} within {timeout}s:\n" + "".join(lines))


def demo_object(lines: list[str]) -> dict[str, Any]:
    """The demo object, printed indented from a line "{" to a line "}" (service log
    lines may come before it)."""
    start = next(i for i, line in enumerate(lines) if line.rstrip() == "{")
    end = next(i for i in range(start, len(lines)) if lines[i].rstrip() == "}")
    demo: dict[str, Any] = json.loads("".join(lines[start : end + 1]))
    return demo
