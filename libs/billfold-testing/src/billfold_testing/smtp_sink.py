"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives.

Tests run it on their own event loop and read ``messages`` (parsed MIME); they can
stop it and start it again on the same port (SMTP down, then up) or make it answer
with an error (``fail_next``). ``make run`` runs it as ``python -m
billfold_testing.smtp_sink``: each message becomes an ``.eml`` file and one line with
its recipient, subject and link. Development only: never in a production image.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import re
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

LINK = re.compile(r"https?://\S+/r/\S+")


@dataclass
class Received:
    envelope_from: str
    recipients: list[str]
    message: EmailMessage
    raw: bytes
    at: float = field(default_factory=time.monotonic)

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def part(self, subtype: str) -> str:
        found = self.message.get_body(preferencelist=(subtype,))
        if found is None or found.get_content_subtype() != subtype:
            raise LookupError(f"no text/{subtype} part")
        return str(found.get_content())

    def link(self) -> str | None:
        match = LINK.search(self.part("plain"))
        return match.group(0) if match else None


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        failure = self.sink.take_failure(address)
        if failure is not None:
            return failure
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        raw = content.encode() if isinstance(content, str) else bytes(content)
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        received = Received(str(envelope.mail_from), list(envelope.rcpt_tos), parsed, raw)
        self.sink.deliver(received)
        return "250 Message accepted for delivery"


class SmtpSink:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, out_dir: Path | None = None) -> None:
        self.host = host
        self.port = port
        self.out_dir = out_dir
        self.messages: list[Received] = []
        # SMTP replies to give instead of accepting the next recipients ("451 ..." / "550 ..."),
        # each for one address or (None) for any.
        self.failures: list[tuple[str, str | None]] = []
        self.echo = False
        self._server: asyncio.Server | None = None
        self._sessions: list[SMTP] = []
        self._arrived = asyncio.Event()

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._session, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def _session(self) -> SMTP:
        session = SMTP(_Handler(self), hostname="sink.localhost")
        # Keep only live ones: a long `make run` sees many short connections.
        self._sessions = [s for s in self._sessions if s.transport and not s.transport.is_closing()]
        self._sessions.append(session)
        return session

    async def stop(self) -> None:
        """Stop listening and drop every open connection (clients that keep SMTP
        connections open must see the server go away too)."""
        sessions, self._sessions = self._sessions, []
        for session in sessions:
            if session.transport is not None:
                session.transport.close()
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def fail_next(self, reply: str, times: int = 1, *, to: str | None = None) -> None:
        """Answer ``reply`` instead of accepting the next ``times`` recipients (only
        ``to``, when given: a test's failures must not be spent on mail another test
        left behind in a shared database)."""
        self.failures.extend([(reply, to)] * times)

    def take_failure(self, address: str) -> str | None:
        for i, (reply, to) in enumerate(self.failures):
            if to is None or to == address:
                del self.failures[i]
                return reply
        return None

    def deliver(self, received: Received) -> None:
        self.messages.append(received)
        self._arrived.set()
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            name = f"{time.strftime('%Y%m%dT%H%M%S')}-{len(self.messages):05d}.eml"
            (self.out_dir / name).write_bytes(received.raw)
        if self.echo:
            link = received.link() if received.message.is_multipart() else None
            print(
                f"mail to {', '.join(received.recipients)}: {received.subject}"
                + (f"\n  link: {link}" if link else ""),
                flush=True,
            )

    def to(self, address: str) -> list[Received]:
        return [m for m in self.messages if address in m.recipients]


async def _serve(host: str, port: int, out_dir: Path) -> None:
    sink = SmtpSink(host, port, out_dir)
    sink.echo = True
    await sink.start()
    print(f"smtp sink on {host}:{sink.port}, writing .eml files to {out_dir}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="Development SMTP sink")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--dir", type=Path, default=Path("var/mail"))
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.host, args.port, args.dir))


if __name__ == "__main__":
    main()
