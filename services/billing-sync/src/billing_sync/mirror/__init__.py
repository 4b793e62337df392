"""Writing Stripe objects into the ``mirror`` schema, one module per kind of object.

Each ``refresh`` fetches the object's CURRENT state from Stripe (the event that woke us
is only a hint: events arrive duplicated, late and out of order) and writes it. A row is
written only when a shown field changed (``IS DISTINCT FROM``), and only a written row
emits its change event through billing-sync's outbox, so a duplicate or stale event
emits nothing. Callers serialise refreshes per Stripe customer (``billing_sync.worker``),
so a later fetch is never overwritten by an earlier one.
"""
