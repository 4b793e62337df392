"""Email + code sign-in: login requests (the code's salted hash and its attempt
counter), verified sign-ins, and browser sessions that come from a sign-in instead of
a link.

The attempt counter lives here, in Postgres, not in Redis: losing Redis must never
reset it (the rate limits in Redis only slow down how fast codes are asked for).
"""

from yoyo import step

__depends__ = {"web_0002_audit"}

SIGN_IN = """
-- One row per "email me a code". The request writes only this row (and a NOTIFY): the
-- same work whether or not the email belongs to anyone. portal-web's code resolver
-- (portal_web.code_resolver) picks it up behind the request, looks the email up in
-- the site's mirror and, when it matches, stores the code's salted hash and enqueues
-- login.code_requested with the code sealed to the notifier.
CREATE TABLE web.login_requests (
    id              text PRIMARY KEY,                -- lr_…
    site_id         text NOT NULL,
    email           text NOT NULL,                   -- normalised (trimmed, lower case)
    locale          text,
    next_section    text,                            -- where to land after sign-in
    ip              text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    resolved_at     timestamptz,                     -- the resolver looked at it
    customer_count  integer,                         -- 0: nobody uses it, no code sent
    code_salt       text,
    code_hash       text,                            -- salted SHA-256, never the code
    attempts        integer NOT NULL DEFAULT 0,
    verified_at     timestamptz
);
CREATE INDEX login_requests_pending_idx ON web.login_requests (created_at)
    WHERE resolved_at IS NULL;
CREATE INDEX login_requests_created_idx ON web.login_requests (created_at);

-- A verified email on a site: what the account chooser lists from, and what lets a
-- customer switch between that email's accounts without another code. The bfi_ token
-- (its SHA-256 here) is the chooser's cookie.
CREATE TABLE web.sign_ins (
    id                text PRIMARY KEY,              -- si_…
    login_request_id  text NOT NULL UNIQUE REFERENCES web.login_requests (id),
    site_id           text NOT NULL,
    email             text NOT NULL,
    token_hash        text NOT NULL UNIQUE,
    created_at        timestamptz NOT NULL DEFAULT now(),
    expires_at        timestamptz NOT NULL,
    ended_at          timestamptz                    -- signed out
);

-- A browser session from a sign-in has no portal session (no link): its sections and
-- expiry are its own (the site's defaults and sign-in lifetime at sign-in time).
ALTER TABLE web.browser_sessions ALTER COLUMN portal_session_id DROP NOT NULL;
ALTER TABLE web.browser_sessions ADD COLUMN sign_in_id text REFERENCES web.sign_ins (id);
ALTER TABLE web.browser_sessions ADD COLUMN sections jsonb;
ALTER TABLE web.browser_sessions ADD CONSTRAINT browser_sessions_origin CHECK (
    (portal_session_id IS NOT NULL) <> (sign_in_id IS NOT NULL)
);
CREATE INDEX browser_sessions_sign_in_idx ON web.browser_sessions (sign_in_id);
"""

# A sign-in's browser session has no portal session: its actions are audited under the
# sign-in instead.
AUDIT_SIGN_IN = """
ALTER TABLE web.audit_log ALTER COLUMN portal_session_id DROP NOT NULL;
ALTER TABLE web.audit_log ADD COLUMN sign_in_id text;
ALTER TABLE web.audit_log ADD CONSTRAINT audit_log_session_chk
    CHECK (portal_session_id IS NOT NULL OR sign_in_id IS NOT NULL);
"""

steps = [step(SIGN_IN), step(AUDIT_SIGN_IN)]
