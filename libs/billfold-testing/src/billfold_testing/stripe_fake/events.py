"""Events: creation (with ``previous_attributes``), storage, and the ``/v1/events`` API.

Every state change calls :func:`emit`; listeners registered on the state (the webhook
dispatcher) are told synchronously, in emission order, which is the order documented in
the README.
"""

from __future__ import annotations

from typing import Any

from stripe.params import (
    EventListParams,
    EventRetrieveParams,
)

from . import shapes
from .forms import get_list, get_str
from .lists import created_filter, paginate
from .params import Allow
from .routing import Ctx, Routes
from .state import FakeState

Json = dict[str, Any]
#: the API version the installed ``stripe`` 16.x library pins; events claim it
API_VERSION = "2026-10-28.endive"

routes = Routes()


def previous_attributes(before: Json, after: Json) -> Json:
    """Stripe's ``previous_attributes``: old values of the fields that changed.

    Nested plain hashes (``metadata``, ``invoice_settings``) list only the sub-keys that
    changed; a key that did not exist before is reported as ``null``.
    """
    changed: Json = {}
    for key in after.keys() | before.keys():
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if (
            isinstance(old, dict)
            and isinstance(new, dict)
            and "id" not in old
            and old.get("object") != "list"
        ):
            changed[key] = previous_attributes(old, new)
        else:
            changed[key] = old
    return changed


def emit(state: FakeState, type_: str, obj: Json, previous: Json | None = None) -> Json:
    """Record an event about ``obj`` (already rendered) and hand it to the listeners."""
    event = shapes.blank("event")
    request = state.request
    event.update(
        id=state.new_id("evt_"),
        api_version=API_VERSION,
        created=state.clock.now(),
        type=type_,
        pending_webhooks=0,
        request={
            "id": request.id if request else None,
            "idempotency_key": request.idempotency_key if request else None,
        },
        data={"object": obj},
    )
    if previous is not None:
        event["data"]["previous_attributes"] = previous
    state.add("event", event)
    for listener in state.event_listeners:
        listener(event)
    return event


def emit_update(state: FakeState, type_: str, before: Json, after: Json) -> Json | None:
    """Emit ``*.updated`` if anything visible changed; Stripe sends nothing for no-ops."""
    previous = previous_attributes(before, after)
    if not previous:
        return None
    return emit(state, type_, after, previous)


@routes.get("/v1/events", params=Allow(EventListParams))
def list_events(ctx: Ctx) -> Json:
    wanted = set(get_list(ctx.params, "types"))
    single = get_str(ctx.params, "type")
    in_range = created_filter(ctx.params)

    def match(event: Json) -> bool:
        kind = str(event["type"])
        if single and not (
            kind == single or (single.endswith(".*") and kind.startswith(single[:-1]))
        ):
            return False
        return (not wanted or kind in wanted) and in_range(event)

    every = ctx.state.newest_first("event")
    rows = [e for e in every if match(e)]
    return paginate(rows, ctx.params, "/v1/events", ctx.state.render, "event", unfiltered=every)


@routes.get("/v1/events/{id}", params=Allow(EventRetrieveParams))
def retrieve_event(ctx: Ctx) -> Json:
    return ctx.state.render(ctx.state.get("event", ctx.arg("id")))
