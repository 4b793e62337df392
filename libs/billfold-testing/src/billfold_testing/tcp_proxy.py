"""A loopback TCP proxy whose link can be cut and restored, to test outages for real.

Put it between a client and a real server (RabbitMQ, Postgres) and call :meth:`cut`:
every live connection is closed at once and new ones are refused (the listening socket
is closed, so a connect fails fast with "connection refused", as with a stopped
broker). :meth:`restore` listens again on the same port. :meth:`pause` keeps every
connection open but forwards nothing (a server that hangs: callers wait out their own
timeouts) until :meth:`resume`, which forwards what was held.
"""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self.port = 0
        self.connections_total = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def start(self) -> None:
        """Listen on an ephemeral port (kept for later restores); see :attr:`port`."""
        await self._listen()

    async def cut(self) -> None:
        """Close every live connection and refuse new ones until :meth:`restore`."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self._drop_connections()

    async def restore(self) -> None:
        if self._server is None:
            await self._listen()

    def pause(self) -> None:
        """Hold every byte in both directions (connections stay open) until :meth:`resume`."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def stop(self) -> None:
        self.resume()
        await self.cut()

    @property
    def live_connections(self) -> int:
        return len(self._writers) // 2

    async def _listen(self) -> None:
        server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = server.sockets[0].getsockname()[1]
        self._server = server

    async def _drop_connections(self) -> None:
        for writer in list(self._writers):
            # abort(): an RST-like immediate close, no waiting to flush buffered data.
            writer.transport.abort()
        self._writers.clear()
        for task in list(self._pipes):
            task.cancel()
        for task in list(self._pipes):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._pipes.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted just as we were cut
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        if self._server is None:  # cut while we were connecting upstream
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self.connections_total += 1
        self._writers.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst, (writer, up_writer)))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while data := await src.read(65536):
                await self._flowing.wait()
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # One side ended: end both, as a real broken link would.
            for writer in pair:
                writer.transport.abort()
                self._writers.discard(writer)
