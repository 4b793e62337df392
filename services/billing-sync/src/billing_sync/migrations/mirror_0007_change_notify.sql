-- depends: mirror_0006_paused_status
-- Change notification for readers that cache the mirror (portal-web's mirror cache):
-- every row written to a table the portal's pages read NOTIFYs `mirror_changed` with
-- '<site id>:<customer id>'. Row triggers catch every writer (billing-sync's webhook
-- worker, reconciliation, RPC handlers, `billfold demo`, tests' fixtures). Postgres
-- delivers notifications at commit, never for a rolled-back transaction, and sends
-- identical payloads of one transaction once. This is a cache signal, not a domain event:
-- a listener that was down clears its cache instead of catching up.
--
-- The cost per written row: one pg_notify (a hash insert into the transaction's pending
-- list) and, for subscription items, one primary-key lookup of the subscription.

CREATE OR REPLACE FUNCTION mirror.notify_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    new_key text;
    old_key text;
BEGIN
    IF TG_TABLE_NAME = 'customers' THEN
        IF TG_OP <> 'DELETE' THEN new_key := NEW.site_id || ':' || NEW.id; END IF;
        IF TG_OP <> 'INSERT' THEN old_key := OLD.site_id || ':' || OLD.id; END IF;
    ELSIF TG_TABLE_NAME = 'subscription_items' THEN
        -- Items carry no customer: their subscription's. A subscription deleted with its
        -- items (ON DELETE CASCADE) notifies through its own row.
        IF TG_OP <> 'DELETE' THEN
            SELECT s.site_id || ':' || s.customer_id INTO new_key
            FROM mirror.subscriptions s WHERE s.stripe_id = NEW.subscription_id;
        END IF;
        IF TG_OP <> 'INSERT' THEN
            SELECT s.site_id || ':' || s.customer_id INTO old_key
            FROM mirror.subscriptions s WHERE s.stripe_id = OLD.subscription_id;
        END IF;
    ELSE
        -- subscriptions, invoices, payment_methods, usage: (site_id, customer_id).
        IF TG_OP <> 'DELETE' THEN new_key := NEW.site_id || ':' || NEW.customer_id; END IF;
        IF TG_OP <> 'INSERT' THEN old_key := OLD.site_id || ':' || OLD.customer_id; END IF;
    END IF;
    IF new_key IS NOT NULL THEN
        PERFORM pg_notify('mirror_changed', new_key);
    END IF;
    IF old_key IS NOT NULL AND old_key IS DISTINCT FROM new_key THEN
        PERFORM pg_notify('mirror_changed', old_key);
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS notify_changed ON mirror.customers;
CREATE TRIGGER notify_changed AFTER INSERT OR UPDATE OR DELETE ON mirror.customers
    FOR EACH ROW EXECUTE FUNCTION mirror.notify_changed();
DROP TRIGGER IF EXISTS notify_changed ON mirror.subscriptions;
CREATE TRIGGER notify_changed AFTER INSERT OR UPDATE OR DELETE ON mirror.subscriptions
    FOR EACH ROW EXECUTE FUNCTION mirror.notify_changed();
DROP TRIGGER IF EXISTS notify_changed ON mirror.subscription_items;
CREATE TRIGGER notify_changed AFTER INSERT OR UPDATE OR DELETE ON mirror.subscription_items
    FOR EACH ROW EXECUTE FUNCTION mirror.notify_changed();
DROP TRIGGER IF EXISTS notify_changed ON mirror.invoices;
CREATE TRIGGER notify_changed AFTER INSERT OR UPDATE OR DELETE ON mirror.invoices
    FOR EACH ROW EXECUTE FUNCTION mirror.notify_changed();
DROP TRIGGER IF EXISTS notify_changed ON mirror.payment_methods;
CREATE TRIGGER notify_changed AFTER INSERT OR UPDATE OR DELETE ON mirror.payment_methods
    FOR EACH ROW EXECUTE FUNCTION mirror.notify_changed();
DROP TRIGGER IF EXISTS notify_changed ON mirror.usage;
CREATE TRIGGER notify_changed AFTER INSERT OR UPDATE OR DELETE ON mirror.usage
    FOR EACH ROW EXECUTE FUNCTION mirror.notify_changed();
