-- The `notify` schema: what the notifier delivers and to whom. Only the notifier writes
-- here. It reads portal.sites (branding) and mirror.customers (recipient) with SELECTs.

CREATE SCHEMA IF NOT EXISTS notify;

-- The bus consumer's dedupe records (billfold.bus): one row per handled event id.
CREATE TABLE notify.processed_events (
    consumer     text NOT NULL,
    event_id     text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Tenant endpoints. The signing secret is stored AES-256-GCM-encrypted under the
-- notifier's data key: the notifier must sign with it, so a hash would not do.
CREATE TABLE notify.webhook_endpoints (
    id            text PRIMARY KEY,                  -- we_…
    site_id       text NOT NULL,
    url           text NOT NULL,
    -- Empty: every event type.
    event_types   text[] NOT NULL DEFAULT '{}',
    secret_sealed bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    removed_at    timestamptz
);
CREATE INDEX webhook_endpoints_site_idx ON notify.webhook_endpoints (site_id) WHERE removed_at IS NULL;

-- One row per message to send: an email for an event, or an event for one endpoint.
-- The unique key makes a redelivered event create nothing twice. It is also the retry
-- schedule (next_attempt_at) and the dead-letter store (status 'dead', last_error).
CREATE TABLE notify.deliveries (
    id              text PRIMARY KEY,                -- dlv_…
    event_id        text NOT NULL,
    event_type      text NOT NULL,
    site_id         text NOT NULL,
    channel         text NOT NULL CHECK (channel IN ('email', 'webhook')),
    endpoint_id     text NOT NULL DEFAULT '' ,       -- '' for email
    -- The event as received: sealed secrets only, never a readable link or code.
    payload         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    locked_until    timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    dead_at         timestamptz,
    UNIQUE (event_id, channel, endpoint_id)
);
CREATE INDEX deliveries_due_idx ON notify.deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_dead_idx ON notify.deliveries (dead_at) WHERE status = 'dead';
CREATE INDEX deliveries_endpoint_idx ON notify.deliveries (endpoint_id, created_at DESC)
    WHERE channel = 'webhook';

-- The delivery log per endpoint: every attempt, its answer or error.
CREATE TABLE notify.webhook_attempts (
    id           bigserial PRIMARY KEY,
    delivery_id  text NOT NULL REFERENCES notify.deliveries (id) ON DELETE CASCADE,
    endpoint_id  text NOT NULL,
    attempted_at timestamptz NOT NULL DEFAULT now(),
    status_code  integer,
    error        text,
    duration_ms  integer NOT NULL
);
CREATE INDEX webhook_attempts_endpoint_idx ON notify.webhook_attempts (endpoint_id, id DESC);

-- Per-site sender for emails (default: BILLFOLD_MAIL_FROM, named after the site).
CREATE TABLE notify.senders (
    site_id      text PRIMARY KEY,
    from_address text NOT NULL,
    from_name    text,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
