"""The Stripe mirror: per-site Stripe accounts, received events, subscriptions (+ items),
invoices, payment methods, usage, and billing-sync's outbox.

A Python migration so the outbox comes from the shared library's one definition
(``billfold.outbox.outbox_ddl``) instead of a pasted copy.
"""

from yoyo import step

from billfold.outbox import outbox_ddl

__depends__ = {"mirror_0001_customers"}

MIRROR = """
-- What the portal shows of a customer beyond 0001's columns.
ALTER TABLE mirror.customers
    ADD COLUMN phone                  text,
    ADD COLUMN address                jsonb,
    ADD COLUMN tax_ids                jsonb NOT NULL DEFAULT '[]'::jsonb,
    ADD COLUMN default_payment_method text,           -- pm_…
    ADD COLUMN synced_at              timestamptz;     -- last fetched from Stripe

-- Which Stripe account serves a site, and the site's own Stripe secrets (encrypted).
CREATE TABLE mirror.stripe_accounts (
    site_id            text PRIMARY KEY,
    -- The Stripe account's identity for grouping sites that share one: the API key's
    -- fingerprint (or 'platform' for the deployment's key), plus '/acct_…' for Connect.
    account_ref        text NOT NULL,
    connect_account_id text CHECK (connect_account_id ~ '^acct_[A-Za-z0-9]{1,255}$'),
    -- AES-256-GCM (billing_sync.secrets), AAD = site id + column name. NULL api key:
    -- the deployment's key (BILLFOLD_STRIPE_API_KEY).
    api_key_enc        bytea,
    api_key_hint       text,                           -- sk_live_…abcd, for humans
    webhook_secret_enc bytea,
    -- Where several sites share an account, a customer without metadata billfold_site
    -- belongs to the account's default site.
    is_default         boolean NOT NULL DEFAULT false,
    -- Last reconciliation (billing_sync.reconcile): NULL until the first, a backfill.
    reconciled_at      timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX stripe_accounts_one_default_idx
    ON mirror.stripe_accounts (account_ref) WHERE is_default;
CREATE INDEX stripe_accounts_ref_idx ON mirror.stripe_accounts (account_ref);

-- Every Stripe event accepted by a webhook endpoint, recorded in the transaction that
-- accepts it (the id makes a redelivery a no-op), then processed asynchronously.
CREATE TABLE mirror.stripe_events (
    id              text PRIMARY KEY,                  -- evt_…
    site_id         text NOT NULL,                     -- the endpoint that received it
    type            text NOT NULL,
    object_type     text,
    object_id       text,
    stripe_created  timestamptz,
    payload         jsonb NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    failed_at       timestamptz                        -- gave up; reconciliation repairs
);
CREATE INDEX stripe_events_pending_idx ON mirror.stripe_events (next_attempt_at, received_at)
    WHERE processed_at IS NULL AND failed_at IS NULL;
CREATE INDEX stripe_events_processed_idx ON mirror.stripe_events (processed_at)
    WHERE processed_at IS NOT NULL;

CREATE TABLE mirror.subscriptions (
    stripe_id              text PRIMARY KEY,           -- sub_…
    site_id                text NOT NULL,
    customer_id            text NOT NULL REFERENCES mirror.customers (id),
    stripe_customer_id     text NOT NULL,
    status                 text NOT NULL,
    collection_method      text,
    currency               text,
    cancel_at_period_end   boolean NOT NULL DEFAULT false,
    cancel_at              timestamptz,
    canceled_at            timestamptz,
    ended_at               timestamptz,
    cancellation_reason    text,                       -- cancellation_details.reason
    cancellation_feedback  text,
    trial_start            timestamptz,
    trial_end              timestamptz,
    -- The items' current period (Stripe keeps it per item): earliest start, latest end.
    current_period_start   timestamptz,
    current_period_end     timestamptz,
    default_payment_method text,
    -- From the invoice preview (invoices.create_preview), refreshed on every change.
    next_charge_at         timestamptz,
    next_charge_amount     bigint,
    next_charge_currency   text,
    created                timestamptz,
    updated_at             timestamptz NOT NULL DEFAULT now(),
    synced_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_customer_idx ON mirror.subscriptions (site_id, customer_id);

CREATE TABLE mirror.subscription_items (
    stripe_id            text PRIMARY KEY,             -- si_…
    subscription_id      text NOT NULL REFERENCES mirror.subscriptions (stripe_id)
                              ON DELETE CASCADE,
    site_id              text NOT NULL,
    price_id             text NOT NULL,
    product_id           text,
    product_name         text,
    -- flat (per unit, quantity 1), per_unit (quantity > 1), graduated, volume, metered
    price_model          text NOT NULL,
    billing_scheme       text,
    usage_type           text,
    unit_amount          bigint,
    unit_amount_decimal  text,
    tiers                jsonb,
    quantity             bigint,
    interval             text,
    interval_count       integer,
    currency             text,
    meter_id             text,
    current_period_start timestamptz,
    current_period_end   timestamptz
);
CREATE INDEX subscription_items_subscription_idx ON mirror.subscription_items (subscription_id);

CREATE TABLE mirror.invoices (
    stripe_id           text PRIMARY KEY,              -- in_…
    site_id             text NOT NULL,
    customer_id         text NOT NULL REFERENCES mirror.customers (id),
    stripe_customer_id  text NOT NULL,
    subscription_id     text,                          -- parent.subscription_details
    number              text,
    status              text,
    collection_method   text,
    created             timestamptz,
    due_date            timestamptz,
    total               bigint,
    amount_due          bigint,
    amount_paid         bigint,
    amount_remaining    bigint,
    currency            text,
    hosted_invoice_url  text,
    invoice_pdf         text,
    period_start        timestamptz,
    period_end          timestamptz,
    deleted_at          timestamptz,                   -- a deleted draft
    updated_at          timestamptz NOT NULL DEFAULT now(),
    synced_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX invoices_customer_idx ON mirror.invoices (site_id, customer_id, created DESC);

CREATE TABLE mirror.payment_methods (
    stripe_id          text PRIMARY KEY,               -- pm_…
    site_id            text NOT NULL,
    customer_id        text NOT NULL REFERENCES mirror.customers (id),
    stripe_customer_id text NOT NULL,
    type               text NOT NULL,
    card_brand         text,
    card_last4         text,
    card_exp_month     integer,
    card_exp_year      integer,
    is_default         boolean NOT NULL DEFAULT false,
    created            timestamptz,
    detached_at        timestamptz,                    -- no longer attached: not shown
    updated_at         timestamptz NOT NULL DEFAULT now(),
    synced_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_methods_customer_idx ON mirror.payment_methods (site_id, customer_id);

-- Metered usage in the current period, per subscription item and meter.
CREATE TABLE mirror.usage (
    subscription_item_id text PRIMARY KEY,
    subscription_id      text NOT NULL REFERENCES mirror.subscriptions (stripe_id)
                              ON DELETE CASCADE,
    site_id              text NOT NULL,
    customer_id          text NOT NULL,
    meter_id             text NOT NULL,
    meter_name           text,
    period_start         timestamptz NOT NULL,
    period_end           timestamptz NOT NULL,
    value                numeric NOT NULL,
    refreshed_at         timestamptz NOT NULL DEFAULT now()
);
"""

steps = [step(MIRROR), step(outbox_ddl("mirror"))]
