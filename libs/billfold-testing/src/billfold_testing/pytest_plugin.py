"""Pytest fixtures over real infrastructure, isolated per run (see ``infra``).

``bf_slice`` is created once per test session; the async fixtures give a pool and a
Redis client bound to it. Tests isolate from each other by creating their own sites.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from billfold.cache import create_redis
from billfold.db import create_pool
from billfold.logs import configure_logging, restore_logging_state, save_logging_state
from billfold.settings import Settings
from billfold_testing.infra import Slice, create_slice, destroy_slice
from billfold_testing.logcapture import LogCapture
from billfold_testing.waiting import Eventually
from billfold_testing.waiting import eventually as _eventually


@pytest.fixture(autouse=True)
def _bf_logging_restored() -> Iterator[None]:
    """Whatever a test does to logging (``configure_logging`` onto its own stream, at
    its own level, for its own service), the next test, of any package, finds it as it
    was."""
    state = save_logging_state()
    try:
        yield
    finally:
        restore_logging_state(state)


@pytest.fixture
def eventually() -> Eventually:
    """``await eventually(check, timeout=…)``: wait on a condition
    (``billfold_testing.waiting``)."""
    return _eventually


@pytest.fixture(scope="session")
def bf_service_name() -> str:
    """The service whose name the captured lines carry; each service's conftest
    overrides it."""
    return "billfold"


@pytest.fixture
def log_capture(bf_settings: Settings, bf_service_name: str) -> LogCapture:
    """Logging configured for this test onto a fresh capture (undone after the test by
    ``_bf_logging_restored``)."""
    capture = LogCapture()
    configure_logging(bf_service_name, bf_settings, stream=capture.stream)
    return capture


@pytest.fixture
def logs(log_capture: LogCapture) -> LogCapture:
    """The capture, marked: ``lines()`` returns only what the test itself logged."""
    log_capture.mark()
    return log_capture


@pytest.fixture(scope="session")
def bf_slice() -> Iterator[Slice]:
    piece = create_slice(Settings())
    saved = {k: os.environ.get(k) for k in piece.env}
    # Subprocesses started by tests (a service, the CLI) inherit the slice.
    os.environ.update(piece.env)
    try:
        yield piece
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        destroy_slice(piece)


@pytest.fixture(scope="session")
def bf_settings(bf_slice: Slice) -> Settings:
    return bf_slice.settings


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def db_pool(bf_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(bf_settings)
    try:
        yield pool
    finally:
        await pool.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def redis_client(bf_settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = create_redis(bf_settings)
    try:
        yield client
    finally:
        await client.aclose()
