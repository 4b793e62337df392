"""How the browser session's cookie is read (``credentials.cookie_token``) and its cached
entry decoded (``Validator._decoded``): each is worked out once and remembered, and the
memos never change an answer."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import redis.asyncio as aioredis
from aiohttp.test_utils import make_mocked_request

from billfold.settings import Settings
from portal_web import credentials
from portal_web.browser_sessions import Principal, Validator


def _token(cookie: str | None, settings: Settings) -> str | None:
    headers = {"Cookie": cookie} if cookie is not None else {}
    return credentials.cookie_token(make_mocked_request("GET", "/p/plan", headers), settings)


def test_each_cookie_header_gets_its_own_answer_memo_or_not() -> None:
    settings = Settings(portal_base_url="http://localhost:8081")
    name = credentials.cookie_name(settings)
    assert name == "bf_session"
    for _ in range(2):  # the second time from the memo: the same answers
        assert _token(f"{name}=bfs_one", settings) == "bfs_one"
        assert _token(f"other=x; {name}=bfs_two; more=y", settings) == "bfs_two"
        assert _token(f'{name}="bfs_three"', settings) == "bfs_three"
        assert _token("other=x", settings) is None
        assert _token(None, settings) is None
        assert _token(f"__Host-{name}=bfs_four", settings) is None  # not our name here
    # Over the memo's limit: parsed each time, same answer.
    long = "pad=" + "p" * 2000 + f"; {name}=bfs_long"
    assert _token(long, settings) == "bfs_long"
    assert all(len(header) <= 1024 for header, _ in credentials._COOKIE_MEMO)


def test_the_memo_keys_on_the_cookie_name_too() -> None:
    """The same header read under the other name (Secure vs. plain-http localhost)."""
    plain = Settings(portal_base_url="http://localhost:8081")
    secure = Settings(portal_base_url="https://billing.example.com")
    header = "bf_session=bfs_plain; __Host-bf_session=bfs_secure"
    assert _token(header, plain) == "bfs_plain"
    assert _token(header, secure) == "bfs_secure"
    assert _token(header, plain) == "bfs_plain"


def test_the_memo_stays_bounded() -> None:
    settings = Settings(portal_base_url="http://localhost:8081")
    for i in range(credentials._COOKIE_MEMO_SIZE + 10):
        assert _token(f"bf_session=bfs_{i}", settings) == f"bfs_{i}"
    assert len(credentials._COOKIE_MEMO) <= credentials._COOKIE_MEMO_SIZE


def test_a_decoded_cache_entry_serves_only_its_own_token_and_value() -> None:
    """``Validator._decoded`` memoizes ``Principal.from_cache`` per (token, entry): the
    principal always carries the token asked with, and a changed entry is decoded anew."""
    settings = Settings(portal_base_url="http://localhost:8081")
    validator = Validator(settings, aioredis.Redis(), None)  # type: ignore[arg-type]
    entry = Principal(
        id="bs_1",
        token="bfs_a",
        portal_session_id="ps_1",
        link_hash="0" * 64,
        site_id="site_1",
        customer_id="cus_1",
        embedded=False,
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
        sections={"subscriptions": {"enabled": True}},
        locale=None,
        return_url=None,
    )
    raw = entry.cache_value()
    first = validator._decoded("bfs_a", raw)
    assert first == entry
    assert validator._decoded("bfs_a", raw) is first  # memoized
    assert validator._decoded("bfs_b", raw).token == "bfs_b"
    changed = replace(entry, sections={"subscriptions": {"enabled": False}}).cache_value()
    assert validator._decoded("bfs_a", changed).sections == {"subscriptions": {"enabled": False}}
    assert validator._decoded("bfs_a", raw) == entry
