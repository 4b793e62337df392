"""The JSON log lines a test's code wrote, and logging left as each test found it.

Logging is process-global (one sink, one structlog configuration), and the whole
workspace's tests run in one process in random order: a capture configured for one
service's tests must not stay in force for the next package's tests. So a capture is
configured per test (``log_capture`` in the pytest plugin) and undone after it.
"""

from __future__ import annotations

import io
import json
from typing import Any


class LogCapture:
    """The JSON log lines the process wrote since ``mark()``."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self._start = 0

    def mark(self) -> None:
        self._start = len(self.stream.getvalue())

    def text(self) -> str:
        return self.stream.getvalue()[self._start :]

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text().splitlines() if line.strip()]

    def events(self) -> list[str]:
        return [line.get("event", "") for line in self.lines()]
