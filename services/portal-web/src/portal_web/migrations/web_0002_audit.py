"""``web.audit_log``: every customer action in the portal (DESIGN: "every customer action
writes an audit record"), written by portal-web in the same transaction as the
``portal.action`` event it enqueues in ``web.outbox``.

A row per attempt, including the ones billing-sync refused or could not answer: what
the customer tried is part of the record. Never a token: the browser and portal session
ids identify the session.
"""

from yoyo import step

AUDIT = """
CREATE TABLE web.audit_log (
    id                 text PRIMARY KEY,            -- act_…
    site_id            text NOT NULL,
    customer_id        text NOT NULL,
    portal_session_id  text NOT NULL,
    browser_session_id text NOT NULL,
    action             text NOT NULL,               -- subscription.cancel, invoice.pay, …
    object_id          text,                        -- sub_…, pm_…, in_…; NULL for the profile
    outcome            text NOT NULL,               -- ok, stripe_error, invalid_request, …
    error_code         text,
    call_id            text,                        -- the RPC call (billing-sync's rpc_calls)
    ip                 text,
    user_agent         text,
    request_id         text,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_customer_idx ON web.audit_log (site_id, customer_id, created_at DESC);
CREATE INDEX audit_log_portal_session_idx ON web.audit_log (portal_session_id);
"""

steps = [step(AUDIT, "DROP TABLE web.audit_log")]
