"""Billing meters, meter events, and per-customer event summaries.

Events are matched to meters by ``event_name`` when summarised (as Stripe does, meters can
be created after events arrive). Aggregations: ``sum``, ``count`` and ``last``.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from stripe.params.billing import (
    MeterCreateParams,
    MeterDeactivateParams,
    MeterEventCreateParams,
    MeterEventSummaryListParams,
    MeterListParams,
    MeterReactivateParams,
    MeterRetrieveParams,
    MeterUpdateParams,
)

from . import shapes
from .errors import invalid, missing_param
from .forms import enum, get_dict, get_int, get_str, req_str
from .lists import paginate
from .params import Allow
from .periods import DAY
from .routing import Ctx, Routes
from .state import FakeState, random_token

Json = dict[str, Any]
routes = Routes()
_WINDOWS = {"hour": 3600, "day": DAY}
_UNITS = {"hour": "hour", "day": "UTC day (00:00 UTC)"}


def _events_for(state: FakeState, meter: Json, customer: str, start: int, end: int) -> list[Json]:
    customer_key = meter["customer_mapping"]["event_payload_key"]
    return [
        e
        for e in state.meter_events
        if e["event_name"] == meter["event_name"]
        and e["payload"].get(customer_key) == customer
        and start <= e["timestamp"] < end
    ]


def _aggregate(meter: Json, events: list[Json]) -> Decimal:
    formula = meter["default_aggregation"]["formula"]
    if formula == "count":
        return Decimal(len(events))
    value_key = meter["value_settings"]["event_payload_key"]
    values = [Decimal(str(e["payload"].get(value_key, "0"))) for e in events]
    if formula == "last":
        return values[-1] if values else Decimal(0)
    return sum(values, Decimal(0))


def usage(state: FakeState, meter_id: str, customer: str, start: int, end: int) -> float:
    """Aggregated usage of a meter for one customer over ``[start, end)``."""
    meter = state.find("billing.meter", meter_id)
    if meter is None:
        return 0.0
    return float(_aggregate(meter, _events_for(state, meter, customer, start, end)))


@routes.post("/v1/billing/meters", params=Allow(MeterCreateParams))
def create_meter(ctx: Ctx) -> Json:
    state, p = ctx.state, ctx.params
    aggregation = get_dict(p, "default_aggregation")
    if not aggregation:
        raise missing_param("default_aggregation")
    formula = enum(
        aggregation, "formula", ("sum", "count", "last"), param="default_aggregation[formula]"
    )
    if formula is None:
        raise missing_param("default_aggregation[formula]")
    event_name = req_str(p, "event_name")
    if any(
        m["event_name"] == event_name
        for m in state.newest_first("billing.meter")
        if m["status"] == "active"
    ):
        raise invalid(
            f"An active meter with event_name `{event_name}` already exists.", param="event_name"
        )
    mapping = get_dict(p, "customer_mapping") or {}
    values = get_dict(p, "value_settings") or {}
    now = state.clock.now()
    meter = shapes.blank("billing.meter")
    meter.update(
        id=state.new_id("mtr_test_"),
        created=now,
        updated=now,
        display_name=req_str(p, "display_name"),
        event_name=event_name,
        event_time_window=enum(p, "event_time_window", ("day", "hour")),
        default_aggregation={"formula": formula},
        customer_mapping={
            "event_payload_key": get_str(mapping, "event_payload_key") or "stripe_customer_id",
            "type": "by_id",
        },
        value_settings={"event_payload_key": get_str(values, "event_payload_key") or "value"},
    )
    return state.render(state.add("billing.meter", meter))


@routes.get("/v1/billing/meters/{id}", params=Allow(MeterRetrieveParams))
def retrieve_meter(ctx: Ctx) -> Json:
    return ctx.state.render(ctx.state.get("billing.meter", ctx.arg("id")))


@routes.post("/v1/billing/meters/{id}", params=Allow(MeterUpdateParams))
def update_meter(ctx: Ctx) -> Json:
    meter = ctx.state.get("billing.meter", ctx.arg("id"))
    if name := get_str(ctx.params, "display_name"):
        meter["display_name"] = name
        meter["updated"] = ctx.state.clock.now()
    return ctx.state.render(meter)


def _set_status(ctx: Ctx, status: str) -> Json:
    meter = ctx.state.get("billing.meter", ctx.arg("id"))
    now = ctx.state.clock.now()
    meter.update(status=status, updated=now)
    meter["status_transitions"]["deactivated_at"] = now if status == "inactive" else None
    return ctx.state.render(meter)


@routes.post("/v1/billing/meters/{id}/deactivate", params=Allow(MeterDeactivateParams))
def deactivate_meter(ctx: Ctx) -> Json:
    return _set_status(ctx, "inactive")


@routes.post("/v1/billing/meters/{id}/reactivate", params=Allow(MeterReactivateParams))
def reactivate_meter(ctx: Ctx) -> Json:
    return _set_status(ctx, "active")


@routes.get("/v1/billing/meters", params=Allow(MeterListParams))
def list_meters(ctx: Ctx) -> Json:
    status = get_str(ctx.params, "status")
    every = ctx.state.newest_first("billing.meter")
    rows = [m for m in every if not status or m["status"] == status]
    return paginate(
        rows, ctx.params, "/v1/billing/meters", ctx.state.render, "billing.meter", unfiltered=every
    )


@routes.post("/v1/billing/meter_events", params=Allow(MeterEventCreateParams))
def create_meter_event(ctx: Ctx) -> Json:
    state, p = ctx.state, ctx.params
    event_name = req_str(p, "event_name")
    payload = get_dict(p, "payload")
    if not payload:
        raise missing_param("payload")
    meters = [m for m in state.newest_first("billing.meter") if m["event_name"] == event_name]
    for meter in meters:
        ckey = meter["customer_mapping"]["event_payload_key"]
        vkey = meter["value_settings"]["event_payload_key"]
        if ckey not in payload:
            raise missing_param(f"payload[{ckey}]")
        if meter["default_aggregation"]["formula"] != "count":
            try:
                Decimal(str(payload.get(vkey, "")))
            except InvalidOperation:
                raise invalid(
                    f"Value for payload[{vkey}] must be a number.", param=f"payload[{vkey}]"
                ) from None
    identifier = get_str(p, "identifier") or random_token(20)
    if identifier in state.meter_event_identifiers:
        raise invalid(f"An event with identifier {identifier} already exists.", param="identifier")
    now = state.clock.now()
    timestamp = get_int(p, "timestamp") or now
    if timestamp < now - 35 * DAY or timestamp > now + 300:
        raise invalid(
            "Timestamp must be within the past 35 calendar days and not more than 5 minutes "
            "in the future.",
            param="timestamp",
        )
    event = shapes.blank("billing.meter_event")
    event.update(
        created=now,
        event_name=event_name,
        identifier=identifier,
        payload={str(k): str(v) for k, v in payload.items()},
        timestamp=timestamp,
    )
    state.meter_event_identifiers.add(identifier)
    state.meter_events.append(event)
    return dict(event)


@routes.get("/v1/billing/meters/{id}/event_summaries", params=Allow(MeterEventSummaryListParams))
def event_summaries(ctx: Ctx) -> Json:
    state, p = ctx.state, ctx.params
    meter = state.get("billing.meter", ctx.arg("id"))
    customer = req_str(p, "customer")
    start = get_int(p, "start_time")
    end = get_int(p, "end_time")
    if start is None:
        raise missing_param("start_time")
    if end is None:
        raise missing_param("end_time")
    if end <= start:
        raise invalid("end_time must be after start_time.", param="end_time")
    window = enum(p, "value_grouping_window", tuple(_WINDOWS))
    # As on Stripe: both bounds on minute boundaries, and on the grouping window's
    # boundaries (UTC hours or days) when summaries are grouped.
    align, unit = (_WINDOWS[window], _UNITS[window]) if window else (60, "minute")
    for name, value in (("start_time", start), ("end_time", end)):
        if value % align:
            raise invalid(f"{name} must be aligned with {unit} boundaries.", param=name)
    step = _WINDOWS[window] if window else end - start
    buckets = []
    t = start
    while t < end:
        bucket_end = min(t + step, end)
        events = _events_for(state, meter, customer, t, bucket_end)
        summary = shapes.blank("billing.meter_event_summary")
        summary.update(
            id=f"mtrusg_{meter['id'][-10:]}{t}",
            aggregated_value=float(_aggregate(meter, events)),
            start_time=t,
            end_time=bucket_end,
            meter=meter["id"],
        )
        buckets.append(summary)
        t = bucket_end
    # Summaries are listed oldest first (unlike most Stripe lists).
    url = f"/v1/billing/meters/{meter['id']}/event_summaries"
    return paginate(buckets, p, url, dict, "billing.meter_event_summary")
