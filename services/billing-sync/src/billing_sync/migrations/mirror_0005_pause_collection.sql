-- depends: mirror_0004_usage_daily
-- Stripe's `pause_collection` on a subscription: payment collection paused (the status
-- stays active) until the customer or the merchant resumes it, or until `resumes_at`.
-- NULL behavior: collection not paused. (A subscription in status `paused` is another
-- thing: a trial that ended without a payment method; see `status`.)
ALTER TABLE mirror.subscriptions
    ADD COLUMN IF NOT EXISTS pause_collection_behavior text,
    ADD COLUMN IF NOT EXISTS pause_collection_resumes_at timestamptz;
