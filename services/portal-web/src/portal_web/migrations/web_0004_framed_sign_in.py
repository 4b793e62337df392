"""Sign-in inside a frame (the drop-in script): a login request and a sign-in remember
whether they began inside a frame, so each works only the way it began.

A framed sign-in carries no cookie (third-party cookies are blocked there): its login
request id travels in the frame's form, and its sign-in token (the account chooser's
credential) in the frame's path. ``embedded`` keeps a framed request's code from being
entered at top level (and the reverse) and a framed chooser token from working as a
cookie (and the reverse). See docs/ARCHITECTURE.md ("Sign-in inside a frame").
"""

from yoyo import step

__depends__ = {"web_0003_sign_in"}

FRAMED = """
ALTER TABLE web.login_requests ADD COLUMN embedded boolean NOT NULL DEFAULT false;
ALTER TABLE web.sign_ins ADD COLUMN embedded boolean NOT NULL DEFAULT false;
-- The email had several accounts at sign-in: the framed portal then offers "Switch
-- account" (at top level the chooser's cookie says so; a frame has no cookie).
ALTER TABLE web.sign_ins ADD COLUMN several boolean NOT NULL DEFAULT false;
"""

steps = [
    step(
        FRAMED,
        "ALTER TABLE web.sign_ins DROP COLUMN embedded, DROP COLUMN several; "
        "ALTER TABLE web.login_requests DROP COLUMN embedded;",
    )
]
