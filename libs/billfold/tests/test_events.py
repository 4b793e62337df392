from datetime import UTC, datetime, timedelta
from typing import get_args

import pytest
from pydantic import ValidationError

from billfold import events


def _session_data() -> events.PortalSessionData:
    return events.PortalSessionData(
        session_id="ps_1",
        customer_id="cu_1",
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )


@pytest.mark.parametrize(
    "event",
    [
        events.PortalSessionCreated(site_id="site_1", data=_session_data(), request_id="req_1"),
        events.PortalSessionUsed(site_id="site_1", data=_session_data()),
        events.PortalSessionRevoked(site_id="site_1", data=_session_data()),
        events.PortalSessionExpired(site_id="site_1", data=_session_data()),
        events.LoginCodeRequested(
            site_id="site_1",
            data=events.LoginCodeRequestedData(
                attempt_id="la_1", email="a@example.com", expires_at=datetime.now(UTC)
            ),
        ),
        events.CustomerUpdated(site_id="s", data=events.CustomerData(customer_id="cu_1")),
        events.SubscriptionUpdated(
            site_id="s", data=events.SubscriptionData(subscription_id="sub_1", customer_id="c")
        ),
        events.InvoiceUpdated(
            site_id="s", data=events.InvoiceData(invoice_id="in_1", customer_id="c")
        ),
        events.PaymentMethodUpdated(
            site_id="s", data=events.PaymentMethodData(payment_method_id="pm_1", customer_id="c")
        ),
        events.PortalAction(
            site_id="s", data=events.PortalActionData(customer_id="c", action="subscription.cancel")
        ),
    ],
)
def test_every_event_round_trips_through_the_one_adapter(event: events.Event) -> None:
    raw = events.dump_event(event)
    back = events.parse_event(raw)
    assert type(back) is type(event)
    assert back == event
    assert back.routing_key == event.type
    assert event.id.startswith("evt_")


def test_every_declared_type_is_in_the_union() -> None:
    union = get_args(events.Event)[0]
    members = {t.model_fields["type"].default for t in get_args(union)}
    assert members == set(events.EVENT_TYPES)


def test_unknown_type_and_bad_data_are_rejected() -> None:
    with pytest.raises(ValidationError):
        events.parse_event({"type": "nope", "site_id": "s", "data": {}})
    with pytest.raises(ValidationError):
        events.parse_event({"type": "portal_session.created", "site_id": "s", "data": {}})


def test_newer_producer_fields_are_kept_not_rejected() -> None:
    raw = events.dump_event(events.PortalSessionCreated(site_id="s", data=_session_data()))
    doc = events.EVENT_ADAPTER.dump_python(events.parse_event(raw), mode="json")
    doc["data"]["added_later"] = 1
    back = events.parse_event(doc)
    assert back.data.model_extra == {"added_later": 1}
