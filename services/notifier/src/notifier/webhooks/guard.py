"""Keeping webhooks away from our own network (SSRF).

A tenant-supplied URL must not reach loopback, private, link-local (cloud metadata at
169.254.169.254), shared, multicast or otherwise non-global addresses. It is checked
when registered, and again at every connection by the resolver the HTTP client uses,
so a hostname that later resolves somewhere else (DNS rebinding) is refused too; IP
literals, which skip resolvers, are checked before each request. Development and tests
can allow such addresses explicitly (``BILLFOLD_WEBHOOK_ALLOW_PRIVATE``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeUrl(ValueError):
    """The URL is not an acceptable webhook target."""


class Refused(OSError):
    """Raised by the resolver at connect time; the HTTP client wraps it."""


def forbidden(address: str) -> bool:
    try:
        ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            ip = mapped
    return not ip.is_global or ip.is_multicast


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def parse(url: str, *, allow_private: bool) -> tuple[str, int]:
    """Check the URL's shape; return (host, port)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeUrl("not a valid URL") from None
    allowed = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in allowed:
        raise UnsafeUrl(f"the URL must use {' or '.join(allowed)}")
    if not parts.hostname:
        raise UnsafeUrl("the URL has no host")
    if parts.username or parts.password:
        raise UnsafeUrl("the URL must not carry credentials")
    default = 443 if parts.scheme == "https" else 80
    return parts.hostname, port or default


def check_literal(url: str, *, allow_private: bool) -> None:
    """Before a request: an IP-literal host is not resolved, so check it here."""
    host, _ = parse(url, allow_private=allow_private)
    if not allow_private and _literal(host) and forbidden(host.strip("[]")):
        raise UnsafeUrl(f"{host} is not a public address")


async def check_url(url: str, *, allow_private: bool) -> None:
    """At registration: the URL's shape, and every address its host resolves to."""
    host, port = parse(url, allow_private=allow_private)
    if allow_private:
        return
    if _literal(host):
        check_literal(url, allow_private=False)
        return
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise UnsafeUrl(f"{host} does not resolve") from None
    bad = sorted({str(info[4][0]) for info in infos if forbidden(str(info[4][0]))})
    if bad:
        raise UnsafeUrl(f"{host} resolves to a non-public address ({', '.join(bad)})")


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that refuses hosts resolving to any forbidden address."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self.inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        bad = [r["host"] for r in results if forbidden(r["host"])]
        if bad:
            raise Refused(f"{host} resolves to a non-public address ({', '.join(bad)})")
        return results

    async def close(self) -> None:
        await self.inner.close()


def connector_kwargs(allow_private: bool) -> dict[str, Any]:
    return {} if allow_private else {"resolver": GuardedResolver()}
