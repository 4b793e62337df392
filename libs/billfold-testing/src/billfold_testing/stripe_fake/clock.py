"""Time-driven billing: what happens when the fake clock passes a moment.

:func:`run_due` replays, in time order, every transition that has come due — trial-will-end
notices, trial ends, renewals, cancellations at period end, the finalization (plus
payment) of renewal invoices an hour after their creation, and the Smart Retries of failed
payments (schedule and final action in ``dunning.py``) — with the clock pinned to each
moment so objects and events carry the timestamps Stripe would give them.

Stripe's own test clocks API is served too: a customer created with ``test_clock`` lives
at that clock's frozen time (every request about it, and its transitions, happen then),
and advancing the clock runs what came due for its customers only (README).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from stripe.params.test_helpers import (
    TestClockAdvanceParams,
    TestClockCreateParams,
    TestClockDeleteParams,
    TestClockListParams,
    TestClockRetrieveParams,
)

from . import invoices, shapes
from .errors import invalid
from .events import emit, emit_update
from .forms import get_int, get_str
from .lists import paginate
from .params import Allow
from .periods import DAY, period
from .routing import Ctx, Routes
from .state import FakeState, kind_of
from .subscriptions import (
    TRIAL_WILL_END_NOTICE,
    cancel_now,
    current_period,
    cycle_lines,
    has_payment_method,
    pause_now,
    recurring_of,
    set_period,
)

Json = dict[str, Any]
Action = Callable[[], None]
routes = Routes()
_MAX_STEPS = 100_000  # guards against a bug looping forever


def end_trial(state: FakeState, sub: Json) -> None:
    """The trial is over: start the first paid period, or pause/cancel without a card."""
    before = state.render(sub)
    now = state.clock.now()
    missing = sub["trial_settings"]["end_behavior"]["missing_payment_method"]
    if (
        sub["collection_method"] == "charge_automatically"
        and not has_payment_method(state, sub)
        and missing in ("pause", "cancel")
    ):
        if missing == "cancel":
            sub["cancellation_details"]["reason"] = "cancellation_requested"
            cancel_now(state, sub)
            return
        pause_now(state, sub, "trial_end_without_payment_method")
        return
    sub.update(status="active", trial_end=now, _anchor=now, _cycle=0, billing_cycle_anchor=now)
    _start_cycle(state, sub, before, previous=None)


def _start_cycle(
    state: FakeState, sub: Json, before: Json, previous: tuple[int, int] | None
) -> None:
    """Move the items to period ``_cycle`` and raise that period's draft invoice."""
    now = state.clock.now()
    trial_start, trial_end = current_period(state, sub)
    start, end = period(int(sub["_anchor"]), recurring_of(state, sub), int(sub["_cycle"]))
    set_period(state, sub, start, end)
    inv = invoices.new_invoice(
        state,
        customer=state.get("customer", sub["customer"], "customer"),
        subscription=sub,
        lines=cycle_lines(state, sub, start, end, trial=False, previous=previous),
        billing_reason="subscription_cycle",
        period_start=previous[0] if previous else trial_start,
        period_end=previous[1] if previous else trial_end,
        currency=sub["currency"],
    )
    sub["latest_invoice"] = inv["id"]
    emit_update(state, "customer.subscription.updated", before, state.render(sub))
    paused = sub["pause_collection"]
    if paused is None:
        invoices.save_draft(state, inv, now + invoices.FINALIZE_DELAY)
        return
    # Collection paused (``pause_collection``): the period's invoice is still made, then
    # kept a draft that never advances, or finalized and at once voided or marked
    # uncollectible, as the pause's behavior says. Nothing is charged.
    if paused["behavior"] == "keep_as_draft":
        inv["auto_advance"] = False
        invoices.save_draft(state, inv, None)
        return
    invoices.save_draft(state, inv, None)
    invoices.finalize(state, inv)
    if inv["status"] != "open":
        return  # nothing was due: paid at finalization
    if paused["behavior"] == "void":
        invoices.void(state, inv)
    else:
        invoices.uncollectible(state, inv)


def resume_collection(state: FakeState, sub: Json) -> None:
    """``pause_collection.resumes_at`` came: collection resumes (the field is cleared)."""
    before = state.render(sub)
    sub["pause_collection"] = None
    emit_update(state, "customer.subscription.updated", before, state.render(sub))


def renew(state: FakeState, sub: Json) -> None:
    before = state.render(sub)
    previous = current_period(state, sub)
    sub["_cycle"] = int(sub["_cycle"]) + 1
    _start_cycle(state, sub, before, previous)


def finalize_draft(state: FakeState, inv: Json) -> None:
    invoices.finalize(state, inv)
    if inv["status"] == "open" and inv["collection_method"] == "charge_automatically":
        invoices.attempt_payment(state, inv)


def trial_will_end(state: FakeState, sub: Json) -> None:
    sub["_trial_will_end_sent"] = True
    emit(state, "customer.subscription.trial_will_end", state.render(sub))


def clock_of(state: FakeState, obj: Json) -> str | None:
    """The test clock of the customer ``obj`` belongs to (or is); None: the fake's own."""
    ident = obj.get("id") if obj.get("object") == "customer" else obj.get("customer")
    customer = state.find("customer", ident) if isinstance(ident, str) else None
    clock = customer.get("test_clock") if customer is not None else None
    return clock if isinstance(clock, str) else None


def request_time(state: FakeState, params: Json, match: dict[str, str]) -> int:
    """When a request happens: for a customer on a test clock (named by ``test_clock``,
    ``customer``, or an object in the path), that clock's frozen time, as on Stripe;
    otherwise now."""
    clock_id = get_str(params, "test_clock")
    refs = [params.get("customer"), *match.values()]
    for ref in refs:
        if clock_id is not None:
            break
        kind = kind_of(ref) if isinstance(ref, str) else None
        obj = state.find(kind, ref) if kind is not None and isinstance(ref, str) else None
        clock_id = clock_of(state, obj) if obj is not None else None
    clock = state.find("test_helpers.test_clock", clock_id) if clock_id else None
    return int(clock["frozen_time"]) if clock is not None else state.clock.now()


def _candidates(state: FakeState, test_clock: str | None) -> list[tuple[int, int, Action]]:
    """Every pending transition of the customers on ``test_clock`` (None: on the fake's
    own clock) as ``(when, tie-break order, action)``."""
    found: list[tuple[int, int, Action]] = []
    for sub in state.newest_first("subscription"):
        if sub["status"] not in ("trialing", "active", "past_due"):
            continue
        if clock_of(state, sub) != test_clock:
            continue
        _start, end = current_period(state, sub)
        if sub["status"] == "trialing" and not sub["_trial_will_end_sent"]:
            notice = max(int(sub["trial_end"]) - TRIAL_WILL_END_NOTICE, int(sub["created"]))
            found.append((notice, 0, partial(trial_will_end, state, sub)))
        resumes_at = (sub["pause_collection"] or {}).get("resumes_at")
        if resumes_at is not None:
            found.append((int(resumes_at), 1, partial(resume_collection, state, sub)))
        if sub["cancel_at"] is not None and int(sub["cancel_at"]) <= end:
            found.append((int(sub["cancel_at"]), 1, partial(cancel_now, state, sub)))
        elif sub["status"] == "trialing":
            found.append((int(sub["trial_end"]), 2, partial(end_trial, state, sub)))
        else:
            found.append((end, 2, partial(renew, state, sub)))
    for inv in state.newest_first("invoice"):
        if clock_of(state, inv) != test_clock:
            continue
        at = inv["automatically_finalizes_at"]
        if inv["status"] == "draft" and inv["auto_advance"] and at is not None:
            found.append((int(at), 3, partial(finalize_draft, state, inv)))
        retry_at = inv.get("_retry_at")
        # auto_advance=false stops automatic collection, as on Stripe
        if inv["status"] == "open" and inv["auto_advance"] and retry_at is not None:
            found.append((int(retry_at), 4, partial(invoices.retry, state, inv)))
    return found


def run_due(state: FakeState, test_clock: str | None = None) -> int:
    """Perform every transition due by now, oldest first; returns how many ran. Only
    those of customers on ``test_clock`` (None: on the fake's own clock), whose "now"
    the caller pins to that clock's time."""
    steps = 0
    while steps < _MAX_STEPS:
        now = state.clock.now()
        due = [c for c in _candidates(state, test_clock) if c[0] <= now]
        if not due:
            return steps
        when, _order, action = min(due, key=lambda c: (c[0], c[1]))
        with state.clock.pinned(when):
            action()
        steps += 1
    raise RuntimeError("stripe_fake: billing transitions did not settle")


def advance(state: FakeState, seconds: int) -> int:
    """Move the clock forward and run what came due; background requests carry no id."""
    saved, state.request = state.request, None
    try:
        with state.clock.released():
            state.clock.advance(seconds)
            run_due(state)
            return state.clock.now()
    finally:
        state.request = saved


# --- Stripe's /v1/test_helpers/test_clocks (a facade over the single fake clock) -------------


@routes.post("/v1/test_helpers/test_clocks", params=Allow(TestClockCreateParams))
def create_test_clock(ctx: Ctx) -> Json:
    frozen = get_int(ctx.params, "frozen_time")
    if frozen is None:
        raise invalid(
            "Missing required param: frozen_time.", param="frozen_time", code="parameter_missing"
        )
    now = ctx.state.clock.now()
    clock = shapes.blank("test_helpers.test_clock")
    clock.update(
        id=ctx.state.new_id("clock_"),
        created=now,
        deletes_after=now + 30 * DAY,
        frozen_time=frozen,
        name=get_str(ctx.params, "name"),
        status="ready",
    )
    return ctx.state.render(ctx.state.add("test_helpers.test_clock", clock))


@routes.get("/v1/test_helpers/test_clocks/{id}", params=Allow(TestClockRetrieveParams))
def retrieve_test_clock(ctx: Ctx) -> Json:
    return ctx.state.render(ctx.state.get("test_helpers.test_clock", ctx.arg("id")))


@routes.get("/v1/test_helpers/test_clocks", params=Allow(TestClockListParams))
def list_test_clocks(ctx: Ctx) -> Json:
    rows = ctx.state.newest_first("test_helpers.test_clock")
    return paginate(rows, ctx.params, "/v1/test_helpers/test_clocks", ctx.state.render)


@routes.delete("/v1/test_helpers/test_clocks/{id}", params=Allow(TestClockDeleteParams))
def delete_test_clock(ctx: Ctx) -> Json:
    clock = ctx.state.get("test_helpers.test_clock", ctx.arg("id"))
    clock["_deleted"] = True
    gone = shapes.blank("deleted_test_helpers.test_clock")
    gone["id"] = clock["id"]
    return gone


@routes.post("/v1/test_helpers/test_clocks/{id}/advance", params=Allow(TestClockAdvanceParams))
def advance_test_clock(ctx: Ctx) -> Json:
    clock = ctx.state.get("test_helpers.test_clock", ctx.arg("id"))
    target = get_int(ctx.params, "frozen_time")
    if target is None:
        raise invalid(
            "Missing required param: frozen_time.", param="frozen_time", code="parameter_missing"
        )
    if target < int(clock["frozen_time"]):
        raise invalid("The test clock cannot be advanced backwards.", param="frozen_time")
    # Only this clock's customers live through the time in between (Stripe's "advancing"
    # is immediate here: the clock comes back "ready").
    clock["frozen_time"] = target
    state = ctx.state
    saved, state.request = state.request, None  # background work carries no request id
    try:
        with state.clock.pinned(target):
            run_due(state, clock["id"])
    finally:
        state.request = saved
    return state.render(clock)
