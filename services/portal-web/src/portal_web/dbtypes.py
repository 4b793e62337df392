"""What repository functions accept: a pooled connection, a plain one, or the pool."""

from __future__ import annotations

from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Conn: TypeAlias = asyncpg.Connection | PoolConnectionProxy
Executor: TypeAlias = Conn | asyncpg.Pool
