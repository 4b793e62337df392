"""The ``web`` schema: who won each link, browser sessions, and portal-web's outbox.

Only portal-web writes here. session-api reads ``web.link_uses`` so its GET and list
show when, from where and by what a link was used (DESIGN: a service writes only its
own schema; the use is portal-web's fact, not session-api's).
"""

from yoyo import step

from billfold.outbox import outbox_ddl

WEB = """
CREATE SCHEMA IF NOT EXISTS web;

-- One row per portal session whose link was used. The primary key decides the winner of
-- a single-use link: of N concurrent consuming POSTs, exactly one INSERT inserts; the
-- others hit the conflict and get no row back (no Redis lock involved). A multi-use
-- link keeps its first use here and counts the later ones.
CREATE TABLE web.link_uses (
    portal_session_id text PRIMARY KEY,              -- ps_…, owned by session-api
    site_id           text NOT NULL,
    used_at           timestamptz NOT NULL DEFAULT now(),
    ip                text,
    user_agent        text,
    uses              integer NOT NULL DEFAULT 1,
    last_used_at      timestamptz NOT NULL DEFAULT now()
);

-- What a used link turns into. The bfs_ token is held by the browser (a cookie at top
-- level, the URL path inside a frame); only its SHA-256 is stored. It never outlives
-- its portal session: expires_at is the portal session's, and every request re-checks
-- the portal session's revoked_at (Redis fast path, Postgres as the truth).
CREATE TABLE web.browser_sessions (
    id                text PRIMARY KEY,              -- bs_…
    token_hash        text NOT NULL UNIQUE,
    portal_session_id text NOT NULL,
    site_id           text NOT NULL,
    customer_id       text NOT NULL,
    embedded          boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    expires_at        timestamptz NOT NULL,
    ended_at          timestamptz                    -- signed out
);
CREATE INDEX browser_sessions_portal_session_idx ON web.browser_sessions (portal_session_id);
CREATE INDEX browser_sessions_expires_idx ON web.browser_sessions (expires_at);
"""

steps = [step(WEB), step(outbox_ddl("web"))]
