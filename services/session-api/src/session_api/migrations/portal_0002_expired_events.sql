-- depends: portal_0001_init
-- portal_session.expired: the expiry sweeper (session_api.portal_sessions.expiry) emits
-- one event per session whose expiry passed without a revoke before it, and records
-- here that it did, in the same transaction, so no session is ever announced twice.

ALTER TABLE portal.portal_sessions ADD COLUMN expired_event_at timestamptz;

-- Sessions that expired before this migration are not announced after the fact:
-- consumers (tenant webhooks) would get a burst of stale expiries. Marked, not emitted.
UPDATE portal.portal_sessions SET expired_event_at = now()
WHERE expires_at <= now() AND expired_event_at IS NULL;

-- The sweep: sessions not yet announced, by expiry. The predicate is the sweep's own,
-- so announced sessions and those revoked before they expired leave the index.
CREATE INDEX portal_sessions_expiry_due_idx ON portal.portal_sessions (expires_at)
    WHERE expired_event_at IS NULL AND (revoked_at IS NULL OR revoked_at > expires_at);
