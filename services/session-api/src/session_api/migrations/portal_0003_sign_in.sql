-- depends: portal_0002_expired_events
-- Email + code sign-in (portal-web): how long a signed-in browser session lives, set
-- per site (`billfold site update --sign-in-ttl`). A link's lifetime is the tenant's
-- call per session; a sign-in has no tenant request behind it, so the site decides.

ALTER TABLE portal.sites ADD COLUMN sign_in_ttl integer NOT NULL DEFAULT 3600
    CONSTRAINT sites_sign_in_ttl CHECK (sign_in_ttl BETWEEN 300 AND 604800);
