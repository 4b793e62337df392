-- depends: portal_0003_sign_in
-- Read-only previews for support staff (`billfold portal preview`): portal-web shows
-- the customer's portal with a banner and refuses every action of such a session.

ALTER TABLE portal.portal_sessions ADD COLUMN preview boolean NOT NULL DEFAULT false;
