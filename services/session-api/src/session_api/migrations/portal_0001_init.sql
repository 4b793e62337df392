-- The `portal` schema: sites, their API keys, portal sessions, idempotency records and
-- session-api's outbox. Only session-api writes here; portal-web reads sites and
-- portal_sessions (token hash lookup as the fallback when Redis misses).

CREATE SCHEMA IF NOT EXISTS portal;

CREATE TABLE portal.sites (
    id                    text PRIMARY KEY,               -- site_…
    slug                  text NOT NULL UNIQUE,
    name                  text NOT NULL,
    logo_url              text,
    primary_color         text,
    accent_color          text,
    support_email         text,
    default_locale        text NOT NULL DEFAULT 'en',
    -- Merged over the all-enabled defaults when a session does not say otherwise.
    default_sections      jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- Origins allowed to embed the portal (CSP frame-ancestors).
    frame_ancestors       text[] NOT NULL DEFAULT '{}',
    stripe_account_id     text,                           -- Stripe Connect, optional
    -- Customer fields shown by the multi-account chooser (e.g. {name,external_id}).
    account_label_fields  text[] NOT NULL DEFAULT '{name,email}',
    default_session_ttl   integer CHECK (default_session_ttl BETWEEN 60 AND 604800),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sites_slug_format CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$')
);

-- Custom domains the portal answers on for a site (portal-web maps Host -> site).
CREATE TABLE portal.site_domains (
    domain      text PRIMARY KEY,
    site_id     text NOT NULL REFERENCES portal.sites (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX site_domains_site_idx ON portal.site_domains (site_id);

CREATE TABLE portal.api_keys (
    id          text PRIMARY KEY,                         -- key_…
    site_id     text NOT NULL REFERENCES portal.sites (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('secret', 'publishable')),
    key_hash    text NOT NULL UNIQUE,                     -- hex SHA-256 of the key
    hint        text NOT NULL,                            -- bf_sk_…abcd, for humans
    -- NULL: every scope of its kind; otherwise the allowed scopes.
    scopes      text[],
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_site_idx ON portal.api_keys (site_id, created_at);

CREATE TABLE portal.portal_sessions (
    id               text PRIMARY KEY,                    -- ps_…
    site_id          text NOT NULL REFERENCES portal.sites (id) ON DELETE CASCADE,
    -- No foreign key: customers live in billing-sync's schema.
    customer_id      text NOT NULL,
    token_hash       text NOT NULL UNIQUE,                -- hex SHA-256 of the bfl_ token
    single_use       boolean NOT NULL DEFAULT true,
    sections         jsonb NOT NULL,
    flow             jsonb,
    return_url       text,
    locale           text,
    send_email       boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    used_at          timestamptz,
    used_ip          text,
    used_user_agent  text,
    revoked_at       timestamptz,
    CONSTRAINT portal_sessions_expiry CHECK (expires_at > created_at)
);
-- The list endpoint: newest first within a site, optionally for one customer.
CREATE INDEX portal_sessions_site_created_idx
    ON portal.portal_sessions (site_id, created_at DESC, id DESC);
CREATE INDEX portal_sessions_customer_created_idx
    ON portal.portal_sessions (site_id, customer_id, created_at DESC, id DESC);

CREATE TABLE portal.idempotency_keys (
    site_id         text NOT NULL REFERENCES portal.sites (id) ON DELETE CASCADE,
    key             text NOT NULL,
    request_hash    text NOT NULL,
    response_status integer,
    -- The response, sealed with a key only the client can derive (it holds the API key
    -- and the idempotency key): the body carries a link token, which is never stored
    -- in a readable form.
    response_body   bytea,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON portal.idempotency_keys (created_at);

-- The shared outbox relay's table (billfold.outbox): do not change its shape here.
CREATE TABLE portal.outbox (
    id             bigserial PRIMARY KEY,
    event_id       text NOT NULL UNIQUE,
    routing_key    text NOT NULL,
    ordering_key   text,
    payload        jsonb NOT NULL,
    headers        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    attempts       integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error     text
);
CREATE INDEX outbox_pending_idx ON portal.outbox (next_attempt_at, id);
CREATE INDEX outbox_ordering_idx ON portal.outbox (ordering_key, id);
CREATE TABLE portal.processed_events (
    consumer     text NOT NULL,
    event_id     text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
