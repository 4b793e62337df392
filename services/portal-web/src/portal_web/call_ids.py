"""One RPC ``call_id`` per rendered form, so a form submitted twice (a double click, the
browser resending a POST) makes one call: billing-sync answers a repeated ``call_id``
from its ``rpc_calls`` table and passes it to Stripe as the ``Idempotency-Key``.

Each action form carries a hidden ``call`` field, a fresh random ``call_…`` value made
when the page is rendered (``new_call_id``, a template global called once per form, so
two forms on one page never share one). The JSON API takes the same from an optional
``Idempotency-Key`` header.

The submitted value is the browser's, so it is trusted for nothing but idempotency. Its
format is checked, and it never becomes the ``call_id`` itself: the server derives the
real one as HMAC-SHA256, keyed by the browser session id (server-side state), over the
submitted value and the call's content (type, site, customer, object ids, arguments).
Why an HMAC and not a prefix: the derived id has a fixed length and alphabet whatever
was submitted; a customer cannot make their id equal another session's (that would need
the other session's key and a SHA-256 collision), so they can neither replay another
customer's stored reply nor block their call; and the same value sent with other
content (a resubmitted form whose fields changed, a value reused on another form) is
another call rather than one billing-sync refuses as "a reused ``call_id`` with other
content".

A form without the field, or with a malformed one (a page rendered before this field
existed, a hand-made POST), gets a fresh id: it works as before, only without the
double-submit protection. An API request with a malformed header is a 400 instead
(the client asked for idempotency and would otherwise silently lose it).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import TypeVar

from billfold.rpc import CallBase

#: The hidden form field that carries the rendered form's value.
FORM_FIELD = "call"
#: The JSON API's optional header.
API_HEADER = "Idempotency-Key"

# What ``billfold.rpc.calls.new_call_id`` makes (what our forms carry).
_FORM_VALUE = re.compile(r"call_[0-9a-f]{32}")
# What an API client may send: Stripe's own convention (a UUID, any printable token),
# kept to a safe alphabet and length.
_API_VALUE = re.compile(r"[A-Za-z0-9_\-:.]{8,200}")

C = TypeVar("C", bound=CallBase)


def valid_form_value(value: object) -> bool:
    return isinstance(value, str) and _FORM_VALUE.fullmatch(value) is not None


def valid_api_value(value: object) -> bool:
    return isinstance(value, str) and _API_VALUE.fullmatch(value) is not None


def scoped(session_id: str, submitted: str, call: C) -> C:
    """``call`` with its ``call_id`` derived from the browser session, the submitted
    value and the call's content (see the module docstring)."""
    content = call.model_dump_json(exclude={"call_id"})
    message = b"\x00".join((submitted.encode("utf-8"), content.encode("utf-8")))
    digest = hmac.new(session_id.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return call.model_copy(update={"call_id": f"call_{digest[:48]}"})


def from_form(session_id: str, submitted: object, call: C) -> C:
    """The form's call: scoped by its hidden value, or as it came (a fresh id) when the
    value is missing or malformed."""
    if not valid_form_value(submitted):
        return call
    assert isinstance(submitted, str)
    return scoped(session_id, submitted, call)
