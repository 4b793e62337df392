"""The transactional outbox: events are rows first, messages second.

A producer writes its change and :func:`enqueue` s the event in the SAME transaction, so
an event exists if and only if the change committed (DESIGN, Principle 1). The
:class:`OutboxRelay` then publishes rows with publisher confirms and deletes them once
the broker has them; from then on the quorum queue holds them durably.

Each producing service owns the table in its own schema, created by its own migration
from :func:`outbox_ddl` (the one definition of its shape), next to the
``processed_events`` table its consumers dedupe with. session-api's ``portal`` outbox
predates the function and was pasted into its SQL migration; a test compares the two.

How the relay behaves:

* **Latency**: a commit that enqueued something NOTIFYs ``channel_name(schema)``; the
  relay LISTENs on a dedicated connection (never a pool connection: the pools skip
  the UNLISTEN reset), so the happy path has no polling delay. A slow safety poll only
  catches notifies missed while that connection was down; it is re-LISTENed after a drop.
* **Throughput**: a batch (up to ``batch_size`` rows, 100 by default) is published
  with all its confirms in flight at once.
* **Replicas**: rows are claimed with ``FOR UPDATE SKIP LOCKED``; confirmed rows are
  deleted in the transaction that claimed them, failed ones get ``attempts``,
  ``next_attempt_at`` (exponential backoff with jitter) and ``last_error``.
* **Order per ordering_key**: only a key's head row (no earlier row of that key left
  in the table) is claimable, so a later event of a key is never published before an
  earlier one was confirmed, whatever the number of relays and even after a failure.
  "Earlier" means lower ``id``, i.e. enqueued first; that is commit order as long as
  writers of one key serialise on the key's own row (UPDATE/INSERT the session row
  before enqueueing), which they do anyway. No advisory lock is taken here: with
  several keys per transaction it would invite deadlocks.
* **Broker down**: rows stay; one warning per failure streak; the relay backs off
  (capped at ``max_backoff``) instead of spinning. A backoff that began with the bus
  down ends as soon as the bus (re)connects, and the rows waiting for a retry are due
  at once then, so the first publish follows the broker's return, not the backoff.
* **Duplicates**: a confirm lost with the connection means a row is published again
  later. Consumers dedupe by event id (``Bus.consume``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import asyncpg
import structlog
from aiohttp import web
from asyncpg.pool import PoolConnectionProxy
from prometheus_client import Counter

from billfold.bus import BUS, REQUEST_ID_HEADER, Bus, sql_identifier
from billfold.db import create_pool
from billfold.events import Event
from billfold.logs import get_logger, redact_text
from billfold.settings import Settings

log = get_logger("billfold.outbox")

PUBLISHED = Counter(
    "billfold_outbox_published_total", "Outbox rows published and confirmed", ["schema"]
)
FAILED = Counter(
    "billfold_outbox_publish_failures_total", "Outbox rows whose publish failed", ["schema"]
)

# First retry after ~0.5 s, doubling per attempt up to the relay's max_backoff.
BASE_BACKOFF = 0.5
# How often a backoff looks whether a bus that had connected before is back: a robust
# reconnect has no event of its own on Bus (its first connect has, wait_connected).
BUS_RECONNECT_POLL = 0.2


def outbox_ddl(schema: str) -> str:
    """The DDL of ``{schema}.outbox`` and ``{schema}.processed_events``: the one place the
    relay's table and the consumers' dedupe table are defined. A service's migration runs
    it (yoyo: ``step(outbox_ddl("mirror"))`` in a ``.py`` migration); the schema must exist."""
    s = sql_identifier(schema)
    # S608: `s` is a checked identifier, not input.
    return f"""
CREATE TABLE {s}.outbox (
    id             bigserial PRIMARY KEY,
    event_id       text NOT NULL UNIQUE,
    routing_key    text NOT NULL,
    ordering_key   text,
    payload        jsonb NOT NULL,
    headers        jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    attempts       integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error     text
);
CREATE INDEX outbox_pending_idx ON {s}.outbox (next_attempt_at, id);
CREATE INDEX outbox_ordering_idx ON {s}.outbox (ordering_key, id);
CREATE TABLE {s}.processed_events (
    consumer     text NOT NULL,
    event_id     text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
"""


def channel_name(schema: str) -> str:
    """The NOTIFY channel of a schema's outbox."""
    return f"billfold_outbox_{sql_identifier(schema)}"


@dataclass(frozen=True)
class _Sql:
    insert: str
    claim: str
    delete: str
    fail: str
    next_due: str
    retry_now: str


@lru_cache(maxsize=32)
def _sql(schema: str) -> _Sql:
    table = f"{sql_identifier(schema)}.outbox"
    # S608: `table` is a checked identifier; every value is a bind parameter.
    return _Sql(
        # Text-cast parameters work whatever JSON codec the caller's connection has.
        insert=(
            f"WITH ins AS (INSERT INTO {table} "  # noqa: S608
            "(event_id, routing_key, ordering_key, payload, headers) "
            "VALUES ($1, $2, $3, $4::text::jsonb, $5::text::jsonb) RETURNING 1) "
            "SELECT pg_notify($6, '') FROM ins"
        ),
        claim=(
            "SELECT o.id, o.event_id, o.routing_key, o.ordering_key, "  # noqa: S608
            "o.payload::text AS payload, o.headers::text AS headers "
            f"FROM {table} o "
            "WHERE o.next_attempt_at <= now() AND (o.ordering_key IS NULL OR NOT EXISTS "
            f"(SELECT 1 FROM {table} e WHERE e.ordering_key = o.ordering_key AND e.id < o.id)) "
            "ORDER BY o.id LIMIT $1 FOR UPDATE OF o SKIP LOCKED"
        ),
        delete=f"DELETE FROM {table} WHERE id = ANY($1::bigint[])",  # noqa: S608
        fail=(
            f"UPDATE {table} AS o SET attempts = o.attempts + 1, "  # noqa: S608
            "next_attempt_at = now() + make_interval(secs => "
            "least($2::float8, $3::float8 * power(2, o.attempts)) * (0.5 + random() / 2)), "
            "last_error = f.err "
            "FROM unnest($1::bigint[], $4::text[]) AS f(id, err) WHERE o.id = f.id"
        ),
        next_due=(
            "SELECT EXTRACT(EPOCH FROM min(next_attempt_at) - now())::float8 "  # noqa: S608
            f"FROM {table} WHERE next_attempt_at > now()"
        ),
        # After an outage: the retries it scheduled are due now that the broker is back.
        retry_now=f"UPDATE {table} SET next_attempt_at = now() WHERE next_attempt_at > now()",  # noqa: S608
    )


async def enqueue(
    conn: asyncpg.Connection | PoolConnectionProxy,
    schema: str,
    event: Event,
    *,
    ordering_key: str | None = None,
) -> None:
    """Add ``event`` to ``{schema}.outbox`` in the caller's transaction and NOTIFY the relay.

    The caller owns the transaction: nothing is published unless it commits (NOTIFY is
    delivered at commit too). Events sharing an ``ordering_key`` (e.g. a portal session
    id) are published in the order they were enqueued; enqueue after the statement that
    writes (and so locks) the key's row, so that order is the commit order.
    """
    sql = _sql(schema)
    request_id = event.request_id or structlog.contextvars.get_contextvars().get("request_id")
    headers = {REQUEST_ID_HEADER: str(request_id)} if request_id else {}
    await conn.execute(
        sql.insert,
        event.id,
        event.routing_key,
        ordering_key,
        event.model_dump_json(),
        json.dumps(headers),
        channel_name(schema),
    )


def _backoff(attempt: int, cap: float) -> float:
    """Exponential backoff with jitter: ~0.5 s, 1 s, 2 s … capped at ``cap``."""
    return float(min(cap, BASE_BACKOFF * 2 ** max(0, attempt - 1)) * random.uniform(0.5, 1.0))


def _error_text(exc: BaseException) -> str:
    # Error texts can quote URLs; stored and logged only after redaction.
    return redact_text(f"{type(exc).__name__}: {exc}")[:500]


async def _until_connected(bus: Bus) -> None:
    """Return once ``bus`` is connected: its first connect is an event; a later robust
    reconnect is only visible as ``bus.connected``, looked at every few hundred ms."""
    await bus.wait_connected()
    while not bus.connected:  # noqa: ASYNC110 - Bus has no event for a reconnect
        await asyncio.sleep(BUS_RECONNECT_POLL)


@dataclass
class _BatchResult:
    claimed: int
    published: int
    keyed_published: bool
    error: BaseException | None
    # The bus was not connected when the batch started (not yet, or reconnecting).
    bus_down: bool = False


class OutboxRelay:
    """Publishes one schema's outbox; run one per replica, they share the work."""

    def __init__(
        self,
        settings: Settings,
        schema: str,
        *,
        bus: Bus | None = None,
        # 100, not more: a batch's publishes run as one burst on the service's event
        # loop, and a bigger burst stalls the requests behind it (the database idles
        # meanwhile): session-api created ~9 % more sessions per second with 100 than
        # with 200 (docs/PERFORMANCE.md). 100 confirms in flight still far outpace it.
        batch_size: int = 100,
        max_backoff: float = 30.0,
        safety_poll: float = 5.0,
        publish_timeout: float = 10.0,
        pool: asyncpg.Pool | None = None,
    ) -> None:
        self.settings = settings
        self.schema = sql_identifier(schema)
        self.batch_size = batch_size
        self.max_backoff = max_backoff
        self.safety_poll = safety_poll
        self.publish_timeout = publish_timeout
        self._sql = _sql(schema)
        self._channel = channel_name(schema)
        self._bus = bus
        self._own_bus = bus is None
        self._pool = pool
        self._own_pool = pool is None
        self._listen_conn: asyncpg.Connection | None = None
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing_since: float | None = None
        self._failure_streak = 0
        self._listen_failing = False
        # For tests and operators: rows confirmed by this relay, outages it went through.
        self.published_total = 0
        self.failure_streaks = 0

    @property
    def listening(self) -> bool:
        """True while the LISTEN connection is up (notifies reach the relay)."""
        return self._listen_conn is not None and not self._listen_conn.is_closed()

    @property
    def listener_pid(self) -> int | None:
        """The LISTEN connection's backend pid (for tests and pg_stat_activity)."""
        conn = self._listen_conn
        return None if conn is None or conn.is_closed() else conn.get_server_pid()

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background loop. Never fails for an unreachable broker or database:
        the loop retries them with backoff."""
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self.schema}")
            self._task.add_done_callback(self._on_task_done)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        # The loop handles every expected failure itself; anything escaping is a bug and
        # would otherwise silently stop publishing until the next restart.
        if not task.cancelled() and task.exception() is not None:
            log.error("outbox_relay_crashed", schema=self.schema, exc_info=task.exception())

    async def stop(self) -> None:
        """Finish the batch in flight (bounded by the publish timeout), then close."""
        self._stopping.set()
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self.publish_timeout + 5)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        await self._close_listener()
        if self._own_bus and self._bus is not None:
            await self._bus.close()
            self._bus = None
        if self._own_pool and self._pool is not None:
            await self._pool.close()
            self._pool = None

    # --- one batch -------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Claim due head rows, publish them with all confirms in flight, delete the
        confirmed ones and reschedule the rest. Returns the number published."""
        return (await self._run_batch()).published

    async def _run_batch(self) -> _BatchResult:
        pool = await self._get_pool()
        # Connect (if needed) before claiming, so no row lock is held while connecting.
        bus = await self._try_bus()
        bus_down = isinstance(bus, Exception) or not bus.connected
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(self._sql.claim, self.batch_size)
            if not rows:
                return _BatchResult(0, 0, False, None, bus_down)
            errors = await self._publish(bus, rows)
            done = [r["id"] for r, e in zip(rows, errors, strict=True) if e is None]
            failed = [(r["id"], e) for r, e in zip(rows, errors, strict=True) if e is not None]
            if done:
                await conn.execute(self._sql.delete, done)
            if failed:
                await conn.execute(
                    self._sql.fail,
                    [i for i, _ in failed],
                    self.max_backoff,
                    BASE_BACKOFF,
                    [_error_text(e) for _, e in failed],
                )
        keyed = any(r["ordering_key"] for r, e in zip(rows, errors, strict=True) if e is None)
        self._count(len(done), len(failed))
        error = failed[0][1] if failed else None
        return _BatchResult(len(rows), len(done), keyed, error, bus_down)

    async def _publish(
        self, bus: Bus | Exception, rows: Sequence[asyncpg.Record]
    ) -> list[BaseException | None]:
        """Publish every row concurrently; one entry per row, None meaning confirmed."""
        if isinstance(bus, Exception):
            # The broker is unreachable: every claimed row records a failed attempt.
            return [bus] * len(rows)
        results = await asyncio.gather(
            *(
                bus.publish_raw(
                    r["routing_key"],
                    r["payload"].encode("utf-8"),
                    message_id=r["event_id"],
                    headers=json.loads(r["headers"]),
                    timeout=self.publish_timeout,
                )
                for r in rows
            ),
            return_exceptions=True,
        )
        return [r if isinstance(r, BaseException) else None for r in results]

    def _count(self, published: int, failed: int) -> None:
        if published:
            self.published_total += published
            PUBLISHED.labels(self.schema).inc(published)
            log.debug("outbox_published", schema=self.schema, count=published)
        if failed:
            FAILED.labels(self.schema).inc(failed)

    # --- resources ---------------------------------------------------------------------------

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            # Two connections: one claims and publishes, one spare; the relay never
            # competes with request handlers for the service's own pool.
            self._pool = await create_pool(self.settings, min_size=1, max_size=2)
        return self._pool

    async def _try_bus(self) -> Bus | Exception:
        """The bus, starting our own on first use (it keeps connecting in the background
        while the broker is down, so a backoff can end when it connects); the error if
        even that fails."""
        if self._bus is None:
            try:
                self._bus = await Bus.start(
                    self.settings,
                    name=f"outbox-relay-{self.schema}",
                    timeout=5.0,
                    max_backoff=min(self.max_backoff, 10.0),
                )
            except Exception as exc:  # returned: the caller records it on the rows
                return exc
        return self._bus

    async def _listen(self) -> None:
        """(Re)open the dedicated LISTEN connection if it is missing or dropped."""
        if self._listen_conn is not None and not self._listen_conn.is_closed():
            return
        await self._close_listener()
        conn = await asyncpg.connect(self.settings.database_url, timeout=5)
        try:
            await conn.add_listener(self._channel, self._on_notify)
        except BaseException:
            await conn.close()
            raise
        conn.add_termination_listener(self._on_listener_lost)
        self._listen_conn = conn
        # Notifies may have been missed while not listening: look at the table now.
        self._wakeup.set()

    async def _close_listener(self) -> None:
        conn, self._listen_conn = self._listen_conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    def _on_notify(self, *_: object) -> None:
        self._wakeup.set()

    def _on_listener_lost(self, *_: object) -> None:
        # Wake the loop so it re-LISTENs now instead of after the safety poll.
        self._wakeup.set()

    # --- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping.is_set():
            await self._ensure_listening()
            self._wakeup.clear()  # a notify arriving during the batch re-arms it
            try:
                result = await self._run_batch()
            except Exception as exc:  # database unreachable, typically
                self._failed(exc, 0)
                await self._back_off(bus_down=False)
                continue
            if result.error is not None and result.published == 0:
                self._failed(result.error, result.claimed)
                await self._back_off(bus_down=result.bus_down)
                continue
            if result.published:
                self._recovered()
            if result.error is not None:
                log.warning(
                    "outbox_publish_partly_failed",
                    schema=self.schema,
                    published=result.published,
                    failed=result.claimed - result.published,
                    error=_error_text(result.error),
                )
            # A full batch means more rows wait; a published head row may have unblocked
            # the next row of its key, which no notify will announce.
            if result.claimed < self.batch_size and not result.keyed_published:
                await self._wait_for_work()

    async def _ensure_listening(self) -> None:
        try:
            await self._listen()
        except Exception as exc:  # the safety poll covers for it meanwhile
            if not self._listen_failing:
                log.warning("outbox_listen_failed", schema=self.schema, error=_error_text(exc))
            self._listen_failing = True
        else:
            self._listen_failing = False

    async def _wait_for_work(self) -> None:
        # stop() may have run before this iteration cleared _wakeup (e.g. during the
        # first _listen): without this check the loop would sleep a full safety poll.
        if self._stopping.is_set():
            return
        timeout = self.safety_poll
        with contextlib.suppress(Exception):
            # Wake for the earliest scheduled retry rather than the safety poll.
            pool = await self._get_pool()
            due = await pool.fetchval(self._sql.next_due)
            if due is not None:
                timeout = min(timeout, max(0.01, float(due)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)

    async def _back_off(self, *, bus_down: bool) -> None:
        """Sleep the failure streak's backoff, ignoring notifies (they would only retry
        into the same outage). If the bus was down when the failed batch started, or is
        down now, the sleep also ends once the bus is connected, and the retries the
        outage scheduled on rows are made due at once: the first publish follows the
        broker's return promptly. With the bus up throughout, a plain sleep."""
        bus = self._bus
        if bus is not None and not bus_down and bus.connected:
            bus = None
        seconds = _backoff(self._failure_streak, self.max_backoff)
        if not await self._sleep(seconds, bus) or self._stopping.is_set():
            return
        with contextlib.suppress(Exception):  # the database may be down too: next batch
            pool = await self._get_pool()
            await pool.execute(self._sql.retry_now)

    async def _sleep(self, seconds: float, bus: Bus | None = None) -> bool:
        """Wait ``seconds``, or less if stopping, or if ``bus`` is given until it is
        connected (at once if it already is). True if the bus ended the wait."""
        waits: list[asyncio.Future[object]] = [asyncio.ensure_future(self._stopping.wait())]
        if bus is not None:
            waits.append(asyncio.ensure_future(_until_connected(bus)))
        try:
            done, _ = await asyncio.wait(
                waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        return len(waits) > 1 and waits[1] in done

    def _failed(self, exc: BaseException, rows: int) -> None:
        self._failure_streak += 1
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            self.failure_streaks += 1
            # One line per outage, not per row or per retry.
            log.warning(
                "outbox_publish_failing", schema=self.schema, rows=rows, error=_error_text(exc)
            )

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.info(
                "outbox_publish_recovered",
                schema=self.schema,
                failed_for_s=round(time.monotonic() - self._failing_since, 1),
                retries=self._failure_streak,
            )
        self._failing_since = None
        self._failure_streak = 0


def relay_context(
    settings: Settings, schema: str
) -> Callable[[web.Application], AsyncIterator[None]]:
    """An ``app.cleanup_ctx`` entry running a relay; shares ``app[BUS]`` if the app has one
    (register ``bus_context`` before this)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        relay = OutboxRelay(settings, schema, bus=app.get(BUS))
        await relay.start()
        try:
            yield
        finally:
            await relay.stop()

    return ctx
