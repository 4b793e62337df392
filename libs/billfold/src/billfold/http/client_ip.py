"""The client's IP address, behind the reverse proxies we trust and no others.

``X-Forwarded-For`` is whatever the client wrote, followed by what each proxy on the way
appended (the address it received the request from). Only the proxies we run (the
Ingress, a load balancer: ``BILLFOLD_TRUSTED_PROXIES``) append honestly, so the header is
read only when the socket peer is one of them, from the right: skip the hops that are
trusted proxies themselves, and the first one that is not is the client. Anything to
its left is the client's own writing and is never believed. Without a trusted peer the
header is ignored and the peer is the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

CLIENT_IP: web.RequestKey[str] = web.RequestKey("client_ip", str)
# A header longer than this is not read at all (the peer is then the answer).
MAX_HOPS = 32


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (or single addresses) as networks; raises ValueError naming a bad one."""
    networks: list[Network] = []
    for value in values:
        text = value.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"not an IP network: {text!r}") from None
    return tuple(networks)


def _address(text: str) -> Address | None:
    """An address as proxies write it: bare, or with a port (``1.2.3.4:80``,
    ``[::1]:80``); IPv4-mapped IPv6 as IPv4."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address, networks: Sequence[Network]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


def client_ip(
    peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]
) -> str | None:
    """The client's address: ``peer`` (the socket's) unless it is a trusted proxy, then
    the rightmost ``X-Forwarded-For`` hop that is not one (see the module docstring).
    ``forwarded_for``: every ``X-Forwarded-For`` header, in the order received."""
    if not trusted or peer is None:
        return peer
    peer_address = _address(peer)
    if peer_address is None or not _trusted(peer_address, trusted):
        return peer
    hops = [hop for header in forwarded_for for hop in header.split(",")]
    if len(hops) > MAX_HOPS:
        return str(peer_address)
    nearest = peer_address  # the last address known to be written honestly
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            # Garbage where a trusted proxy should have written: believe nothing beyond.
            return str(nearest)
        if not _trusted(address, trusted):
            return str(address)
        nearest = address
    return str(nearest)  # every hop a proxy of ours: the farthest one we know


def request_client_ip(request: web.Request, trusted: Sequence[Network]) -> str | None:
    return client_ip(request.remote, request.headers.getall("X-Forwarded-For", []), trusted)
