"""What repository functions accept: a pooled connection, a plain one, or a pool."""

from __future__ import annotations

from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from billfold.db import BoundedPool

Conn: TypeAlias = asyncpg.Connection | PoolConnectionProxy
# Request handlers use the BoundedPool (app[DB]): its wait for a connection is bounded.
Executor: TypeAlias = Conn | asyncpg.Pool | BoundedPool
# What hands out connections: ``async with x.acquire() as conn``.
Acquirer: TypeAlias = asyncpg.Pool | BoundedPool
