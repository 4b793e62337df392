"""A strict check of the URLs tenants give us (``return_url``), straight from RFC 3986.

``urlsplit`` accepts nearly anything (raw ``"<>``, spaces, ``user:pass@``, port 0), and
what it accepted is later put in a ``Location`` header and an HTML ``href``. So the
whole string is matched against the RFC 3986 grammar (appendix A) instead, and only
what a browser reads the same way is kept:

* the scheme is http or https and the authority (``//host``) is present;
* no userinfo: credentials in a URL leak into logs and history, and ``a@b`` is a
  phishing trick;
* the host is a registered name, an IPv4 address or a bracketed IPv6 address; a name
  whose last label is a number must be a dotted-quad IPv4 address (browsers read
  ``1.2.3`` or ``010.0.0.1`` as other addresses); no IPvFuture, zone ids or
  percent-encoded names (no browser takes them; write an IDN in punycode);
* a port, when the ``:`` is there, is 1 to 65535;
* path, query and fragment hold only RFC 3986 characters, ``%`` only as ``%HH``.
"""

from __future__ import annotations

import ipaddress
import re

_UNRESERVED = r"A-Za-z0-9\-._~"
_SUB_DELIMS = r"!$&'()*+,;="
_PCT = r"%[0-9A-Fa-f]{2}"
_PCHAR = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:@]|{_PCT})"

_ABSOLUTE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+\-.]*)://")
# Appendix A: scheme ":" "//" authority path-abempty [ "?" query ] [ "#" fragment ].
_URI = re.compile(
    rf"(?P<scheme>[A-Za-z][A-Za-z0-9+\-.]*)://"
    r"(?P<authority>[^/?#]*)"
    rf"(?:/{_PCHAR}*)*"
    rf"(?:\?(?:{_PCHAR}|[/?])*)?"
    rf"(?:#(?:{_PCHAR}|[/?])*)?"
)
_REG_NAME = re.compile(rf"[{_UNRESERVED}{_SUB_DELIMS}]+")
_IP_LITERAL = re.compile(r"\[(?P<ip>[^\[\]]*)\](?::(?P<port>.*))?")
_DEC_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_DEC_OCTET}(?:\.{_DEC_OCTET}){{3}}")
_PORT = re.compile(r"[0-9]{1,5}")
# A label that browsers (WHATWG URL) parse as a number, decimal or hex.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9A-Fa-f]*")


class InvalidURL(ValueError):
    """The reason, worded to follow "Invalid return_url: "."""


def check_http_url(value: str) -> str:
    """``value`` if it is an absolute http(s) URL as described above, else InvalidURL."""
    start = _ABSOLUTE.match(value)
    if start is None or start["scheme"].lower() not in ("http", "https"):
        raise InvalidURL("must be an absolute http or https URL")
    match = _URI.fullmatch(value)
    if match is None:
        raise InvalidURL(
            "must be a valid URL (RFC 3986): percent-encode spaces, quotes, <, >, `, {, }, "
            "|, \\, ^ and non-ASCII characters"
        )
    _check_authority(match["authority"])
    return value


def _check_authority(authority: str) -> None:
    if "@" in authority:
        raise InvalidURL("must not contain credentials (user:password@)")
    literal = _IP_LITERAL.fullmatch(authority)
    if literal is not None:
        _check_ipv6(literal["ip"])
        port = literal["port"]
    else:
        host, colon, rest = authority.partition(":")
        port = rest if colon else None
        _check_name(host)
    if port is not None and not (_PORT.fullmatch(port) and 1 <= int(port) <= 65535):
        raise InvalidURL("port must be a number from 1 to 65535")


def _check_ipv6(text: str) -> None:
    try:
        # "%" (a zone id) is RFC 6874, not RFC 3986; "v1.x" (IPvFuture) fails here too.
        if "%" in text:
            raise ValueError
        ipaddress.IPv6Address(text)
    except ValueError:
        raise InvalidURL("must have a valid host: [...] holds an IPv6 address") from None


def _check_name(host: str) -> None:
    if not host:
        raise InvalidURL("must have a host")
    if not _REG_NAME.fullmatch(host):
        raise InvalidURL("must have a valid host name (write international names in punycode)")
    name = host.removesuffix(".")
    if _NUMERIC_LABEL.fullmatch(name.rsplit(".", 1)[-1]) and not _IPV4.fullmatch(name):
        raise InvalidURL("must have a valid host: a name ending in a number is an IPv4 address")
