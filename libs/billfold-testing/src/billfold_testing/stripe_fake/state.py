"""In-memory state of one fake Stripe: objects, ids, the controllable clock, event hooks.

Every app instance owns one :class:`FakeState`, so fakes on different ports never share
anything. Objects are stored in Stripe's own shape; keys starting with ``_`` are private
bookkeeping and are stripped when rendering.
"""

from __future__ import annotations

import copy
import secrets
import string
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .dunning import DunningPolicy
from .errors import not_found
from .limits import RateLimiter

Json = dict[str, Any]
_ALPHABET = string.ascii_letters + string.digits

#: id prefix -> (resource kind, human name used in "No such ..." errors)
PREFIXES: dict[str, tuple[str, str]] = {
    "cus_": ("customer", "customer"),
    "prod_": ("product", "product"),
    "price_": ("price", "price"),
    "sub_": ("subscription", "subscription"),
    "si_": ("subscription_item", "subscription item"),
    "in_": ("invoice", "invoice"),
    "inpay_": ("invoice_payment", "invoice_payment"),
    "pi_": ("payment_intent", "payment_intent"),
    "pm_": ("payment_method", "PaymentMethod"),
    "seti_": ("setup_intent", "setupintent"),
    "cs_test_": ("checkout.session", "checkout.session"),
    "mtr_test_": ("billing.meter", "billing.meter"),
    "we_": ("webhook_endpoint", "webhook_endpoint"),
    "evt_": ("event", "event"),
    "txi_": ("tax_id", "tax_id"),
    "clock_": ("test_helpers.test_clock", "test_helpers.test_clock"),
}
_KIND_PREFIX = {kind: prefix for prefix, (kind, _name) in PREFIXES.items()}
_KIND_NAME = {kind: name for _prefix, (kind, name) in PREFIXES.items()}


def kind_of(object_id: str) -> str | None:
    """The resource kind an id belongs to, judged by its prefix (longest prefix wins)."""
    for prefix in sorted(PREFIXES, key=len, reverse=True):
        if object_id.startswith(prefix):
            return PREFIXES[prefix][0]
    return None


#: Random bytes below this map onto the 62 letters and digits without bias (4 * 62).
_UNBIASED = 4 * len(_ALPHABET)


def random_token(length: int = 24) -> str:
    """``length`` random letters and digits. From one read of the OS's randomness, not a
    ``secrets.choice`` (an ``os.urandom`` call) per character: every request makes one
    (its ``req_`` id), and that was the fake's largest CPU cost per request."""
    out: list[str] = []
    while len(out) < length:
        out.extend(_ALPHABET[b % 62] for b in secrets.token_bytes(2 * length) if b < _UNBIASED)
    return "".join(out[:length])


def _copy(value: Any) -> Any:
    """A deep copy of stored JSON (dicts, lists, scalars), several times faster than
    ``copy.deepcopy``, which every response runs through (``render``)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return copy.deepcopy(value)


class Clock:
    """Wall time plus an offset that tests move forward; never goes backwards.

    While billing work for a past moment is processed the clock is *pinned* to that moment,
    so objects created by a renewal carry the renewal's timestamp, as on Stripe.
    """

    def __init__(self) -> None:
        self.offset = 0
        self._pinned: int | None = None

    def now(self) -> int:
        if self._pinned is not None:
            return self._pinned
        return int(time.time()) + self.offset

    def advance(self, seconds: int) -> int:
        self.offset += max(0, seconds)
        return self.now()

    def advance_to(self, timestamp: int) -> int:
        return self.advance(timestamp - self.now())

    @contextmanager
    def released(self) -> Iterator[None]:
        """Let time flow again inside a pinned block (advancing the clock from a request)."""
        previous, self._pinned = self._pinned, None
        try:
            yield
        finally:
            self._pinned = previous

    @contextmanager
    def pinned(self, timestamp: int) -> Iterator[None]:
        previous, self._pinned = self._pinned, timestamp
        try:
            yield
        finally:
            self._pinned = previous


@dataclass
class RequestInfo:
    """The API request being served, recorded on events as ``request``."""

    id: str | None
    idempotency_key: str | None


@dataclass
class IdempotentResult:
    fingerprint: str
    status: int
    body: bytes


Renderer = Callable[["FakeState", Json], Json]
#: kind -> function adding derived fields (embedded prices, URLs...) at render time
RENDERERS: dict[str, Renderer] = {}


class FakeState:
    """Everything one fake Stripe remembers."""

    def __init__(self) -> None:
        self.clock = Clock()
        #: Smart Retries settings (kept across resets, like the clock)
        self.dunning = DunningPolicy()
        self.base_url = ""
        self.request: RequestInfo | None = None
        #: called with every event right after it is created (webhook delivery hooks in here)
        self.event_listeners: list[Callable[[Json], None]] = []
        self._init_data()

    def _init_data(self) -> None:
        self.objects: dict[str, dict[str, Json]] = {}
        self.idempotency: dict[tuple[str, str], IdempotentResult] = {}
        self.meter_events: list[Json] = []
        self.meter_event_identifiers: set[str] = set()
        #: 429s armed for the next API requests (``/_fake/rate_limit``)
        self.rate_limiter = RateLimiter()

    def reset(self) -> None:
        """Forget all objects and events; the clock keeps its offset (time never rewinds)."""
        self._init_data()

    # --- ids and storage ---------------------------------------------------------------------

    def new_id(self, kind_or_prefix: str, length: int = 24) -> str:
        prefix = _KIND_PREFIX.get(kind_or_prefix, kind_or_prefix)
        return prefix + random_token(length)

    def table(self, kind: str) -> dict[str, Json]:
        return self.objects.setdefault(kind, {})

    def add(self, kind: str, obj: Json) -> Json:
        self.table(kind)[obj["id"]] = obj
        return obj

    def find(self, kind: str, object_id: str) -> Json | None:
        return self.table(kind).get(object_id)

    def get(self, kind: str, object_id: str, param: str = "id") -> Json:
        obj = self.find(kind, object_id)
        if obj is None or obj.get("_deleted"):
            raise not_found(_KIND_NAME.get(kind, kind), object_id, param)
        return obj

    def newest_first(self, kind: str) -> list[Json]:
        """All live objects of a kind, newest first (Stripe's list order)."""
        return [o for o in reversed(self.table(kind).values()) if not o.get("_deleted")]

    # --- rendering ---------------------------------------------------------------------------

    def render(self, obj: Json) -> Json:
        """The public JSON for a stored object: private keys stripped, derived fields added."""
        out = {k: _copy(v) for k, v in obj.items() if not k.startswith("_")}
        renderer = RENDERERS.get(str(obj.get("object")))
        return renderer(self, out) if renderer else out

    def render_id(self, object_id: str) -> Json | None:
        kind = kind_of(object_id)
        if kind is None:
            return None
        obj = self.find(kind, object_id)
        return None if obj is None else self.render(obj)

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path
