-- The customer mirror: moves to billing-sync when that service exists.
--
-- billing-sync will own the `mirror` schema (DESIGN.md, "Who owns which data"). Until it
-- exists, session-api creates the customers table so portal sessions have customers to
-- point at (`billfold demo` writes demo customers straight into it). Every statement is
-- idempotent so billing-sync can take the file over unchanged.

CREATE SCHEMA IF NOT EXISTS mirror;

CREATE TABLE IF NOT EXISTS mirror.customers (
    id          text PRIMARY KEY,            -- Billfold id, cu_…
    site_id     text NOT NULL,
    stripe_id   text,                        -- cus_…
    external_id text,                        -- the tenant's own id (Stripe metadata)
    email       text,
    name        text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    UNIQUE (site_id, stripe_id),
    UNIQUE (site_id, external_id)
);

CREATE INDEX IF NOT EXISTS customers_site_email_idx ON mirror.customers (site_id, lower(email));
