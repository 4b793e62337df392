"""The client's IP behind trusted proxies: X-Forwarded-For believed only from them,
read from the right; a spoofed header from anyone else changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from billfold.http.client_ip import CLIENT_IP, client_ip, parse_networks
from billfold.http.middlewares import standard_middlewares
from billfold.settings import Settings
from billfold_testing.logcapture import LogCapture

PROXIES = parse_networks(["10.0.0.0/8", "2001:db8::/32"])


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        # No header, or a peer we do not trust: the peer, whatever the header claims.
        ("198.51.100.7", [], "198.51.100.7"),
        ("198.51.100.7", ["203.0.113.9"], "198.51.100.7"),
        ("198.51.100.7", ["10.0.0.1, 127.0.0.1"], "198.51.100.7"),
        # Our proxy: the hop it appended.
        ("10.0.0.2", ["203.0.113.9"], "203.0.113.9"),
        # The client wrote its own hops first: the rightmost untrusted hop wins.
        ("10.0.0.2", ["1.1.1.1, 127.0.0.1, 203.0.113.9"], "203.0.113.9"),
        # Through two of our proxies.
        ("10.0.0.2", ["6.6.6.6, 203.0.113.9, 10.1.2.3"], "203.0.113.9"),
        # Several headers are one list, in order.
        ("10.0.0.2", ["6.6.6.6", "203.0.113.9, 10.1.2.3"], "203.0.113.9"),
        # Ports, brackets, IPv4-mapped IPv6, IPv6 proxies.
        ("10.0.0.2", ["203.0.113.9:4711"], "203.0.113.9"),
        ("10.0.0.2", ["[2001:db9::1]:443"], "2001:db9::1"),
        ("::ffff:10.0.0.2", ["::ffff:203.0.113.9"], "203.0.113.9"),
        ("2001:db8::5", ["198.51.100.1"], "198.51.100.1"),
        # Garbage where our proxy should have written: nothing beyond it is believed.
        ("10.0.0.2", ["203.0.113.9, unknown"], "10.0.0.2"),
        ("10.0.0.2", ["203.0.113.9, garbage, 10.1.2.3"], "10.1.2.3"),
        # Only our proxies in the chain: the farthest of them.
        ("10.0.0.2", ["10.9.9.9, 10.1.2.3"], "10.9.9.9"),
        ("10.0.0.2", [""], "10.0.0.2"),
        # A header too long to be honest is not read.
        ("10.0.0.2", [", ".join(["203.0.113.9"] * 40)], "10.0.0.2"),
    ],
)
def test_rightmost_untrusted_hop(peer: str, headers: list[str], expected: str) -> None:
    assert client_ip(peer, headers, PROXIES) == expected


def test_nothing_trusted_means_the_peer() -> None:
    assert client_ip("10.0.0.2", ["203.0.113.9"], ()) == "10.0.0.2"
    assert client_ip(None, ["203.0.113.9"], PROXIES) is None


def test_setting_is_a_comma_separated_list_of_cidrs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLFOLD_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.1 ,::1/128")
    settings = Settings()
    assert settings.trusted_proxies == ("10.0.0.0/8", "192.168.1.1/32", "::1/128")
    assert [str(n) for n in settings.trusted_proxy_networks] == list(settings.trusted_proxies)
    monkeypatch.setenv("BILLFOLD_TRUSTED_PROXIES", "10.0.0.0/8,localhost")
    with pytest.raises(ValueError, match="localhost"):
        Settings()
    monkeypatch.delenv("BILLFOLD_TRUSTED_PROXIES")
    assert Settings().trusted_proxies == ()


async def _whoami(request: web.Request) -> web.Response:
    return web.json_response({"ip": request.get(CLIENT_IP)})


async def _client(aiohttp_client: Any, trusted: str | None) -> TestClient[Any, Any]:
    networks = parse_networks([trusted] if trusted else [])
    app = web.Application(middlewares=standard_middlewares("test-ip", 1024, networks))
    app.router.add_get("/whoami", _whoami)
    return await aiohttp_client(app)  # type: ignore[no-any-return]


SPOOF = {"X-Forwarded-For": "203.0.113.66, 198.51.100.9"}


async def test_spoofed_header_from_an_untrusted_peer_is_ignored(
    aiohttp_client: Any, logs: LogCapture
) -> None:
    client = await _client(aiohttp_client, None)
    assert (await (await client.get("/whoami", headers=SPOOF)).json())["ip"] == "127.0.0.1"
    client = await _client(aiohttp_client, "10.0.0.0/8")  # a proxy list without us
    assert (await (await client.get("/whoami", headers=SPOOF)).json())["ip"] == "127.0.0.1"
    remotes = [line["remote"] for line in logs.lines() if line.get("event") == "http_request"]
    assert remotes == ["127.0.0.1", "127.0.0.1"]
    assert "203.0.113.66" not in logs.text()


async def test_header_from_a_trusted_proxy_names_the_client(
    aiohttp_client: Any, logs: LogCapture
) -> None:
    client = await _client(aiohttp_client, "127.0.0.0/8")
    assert (await (await client.get("/whoami", headers=SPOOF)).json())["ip"] == "198.51.100.9"
    assert (await (await client.get("/whoami")).json())["ip"] == "127.0.0.1"
    remotes = [line["remote"] for line in logs.lines() if line.get("event") == "http_request"]
    assert remotes == ["198.51.100.9", "127.0.0.1"]
