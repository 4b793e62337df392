-- depends: mirror_0005_pause_collection
-- Why and since when a subscription is in status `paused` (Stripe's
-- `status_details.paused`): `pause_requested` (paused on demand) or
-- `trial_end_without_payment_method`, and when it transitioned. NULL when not paused.
ALTER TABLE mirror.subscriptions
    ADD COLUMN IF NOT EXISTS paused_reason text,
    ADD COLUMN IF NOT EXISTS paused_at timestamptz;
