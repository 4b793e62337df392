"""return_url: absolute http(s) URLs valid per RFC 3986, without credentials, with a host
and a port from 1 to 65535. The examples are RFC 3986's own (sections 1.1.2, 3, 5.4 and
6.2), moved to http where the RFC used another scheme."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from session_api.urls import InvalidURL, check_http_url

from .conftest import Tenant, assert_error

VALID = [
    # 1.1.2
    "http://www.ietf.org/rfc/rfc2396.txt",
    "http://[2001:db8::7]/c=GB?objectClass?one",
    "http://192.0.2.16:80/",
    # 3: the example URI's authority, path, query and fragment
    "http://example.com:8042/over/there?name=ferret#nose",
    # 5.4: the base and resolved references that are absolute
    "http://a/b/c/d;p?q",
    "http://a/b/c/g",
    "http://a/b/c/g/",
    "http://a/g",
    "http://a/b/c/d;p?y",
    "http://a/b/c/g?y",
    "http://a/b/c/d;p?q#s",
    "http://a/b/c/g#s",
    "http://a/b/c/g?y#s",
    "http://a/b/c/;x",
    "http://a/b/c/g;x",
    "http://a/b/c/g;x?y#s",
    "http://a/b/c/g;x=1/../y",
    # 6.2: equivalent forms, all valid
    "http://example.com/%7Efoo",
    "http://example.com/%7efoo",
    "HTTP://www.EXAMPLE.com/",
    "http://example.com",
    "http://example.com/",
    "http://example.com:80/",
    # a return URL as tenants write them
    "https://app.example.com/account?x=1&y=%20z#billing",
    "https://shop.example:65535/",
    "https://shop.example:1/",
    "https://shop.example./",
    "https://[::1]:8443/x",
    "https://[::ffff:192.0.2.1]/",
    "https://127.0.0.1/",
    "https://xn--bcher-kva.example/",
    "https://a.example/?q=/?:@!$&'()*+,;=",
]

INVALID = [
    # not absolute http(s) (5.4 relative references, 1.1.2 other schemes)
    "g",
    "./g",
    "//g",
    "?y",
    "#s",
    "/relative",
    "ftp://ftp.is.co.za/rfc/rfc1808.txt",
    "mailto:John.Doe@example.com",
    "urn:oasis:names:specification:docbook:dtd:xml:4.1.2",
    "javascript:alert(1)",
    "http:/a/b",
    "https:example.com",
    # credentials (userinfo)
    "https://user:pass@host/",
    "https://user@host/",
    "https://@host/",
    "https://evil.example@shop.example/",
    # characters RFC 3986 does not allow raw
    'https://a.example/"x"',
    "https://a.example/<script>",
    "https://a.example/>",
    "https://a.example/`id`",
    "https://a.example/{x}",
    "https://a.example/a|b",
    "https://a.example/a^b",
    "https://a.example/a b",
    "https://a.example/\\",
    "https://a.example/é",
    "https://bücher.example/",
    "https://a.example/#a#b",
    "https://a.example/%zz",
    "https://a.example/%4",
    "https://a.example/?q=%",
    # hosts
    "https:///path",
    "https://:443/",
    "https://a b/",
    "https://a%2eexample/",
    "https://[::1/",
    "https://[fe80::1%25eth0]/",
    "https://[v1.fe]/",
    "https://[1.2.3.4]/",
    "https://1.2.3/",
    "https://256.0.0.1/",
    "https://010.0.0.1/",
    "https://a.0x7f/",
    # ports
    "https://host:0/",
    "https://host:00000/",
    "https://host:65536/",
    "https://host:99999/",
    "https://host:123456/",
    "https://host:/",
    "https://host:abc/",
    "https://host:-1/",
    "https://[::1]:0/",
    "https://host:80:90/",
]


@pytest.mark.parametrize("url", VALID)
def test_valid_urls_are_accepted(url: str) -> None:
    assert check_http_url(url) == url


@pytest.mark.parametrize("url", INVALID)
def test_invalid_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidURL):
        check_http_url(url)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://user:pass@host/", "credentials"),
        ('https://host/"<>', "RFC 3986"),
        ("https://host/`", "RFC 3986"),
        ("https://host:0/", "port"),
        ("https:///x", "host"),
        ("ftp://host/", "http or https"),
    ],
)
async def test_api_refuses_them_with_the_reason(
    client: TestClient[Any, Any], tenant: Tenant, url: str, reason: str
) -> None:
    resp = await client.post(
        "/v1/portal_sessions",
        json={"customer": tenant.customers[0].id, "return_url": url},
        headers=tenant.auth,
    )
    body = await resp.json()
    assert_error(resp.status, body, 400, "parameter_invalid", "return_url")
    assert reason in body["error"]["message"], body


async def test_api_stores_a_valid_url_unchanged(
    client: TestClient[Any, Any], tenant: Tenant
) -> None:
    url = "https://[2001:db8::7]:8443/c=GB;x?objectClass?one#s"
    resp = await client.post(
        "/v1/portal_sessions",
        data=json.dumps({"customer": tenant.customers[0].id, "return_url": url}),
        headers={**tenant.auth, "Content-Type": "application/json"},
    )
    body = await resp.json()
    assert resp.status == 201, body
    assert body["return_url"] == url
