"""The way back from a dead link: the site's email sign-in, landing where the link led.

Nothing here names the link's customer: the page only links to ``/s/{site}``, where
whoever holds the mailbox types the address and gets a code, like any sign-in.
"""

from __future__ import annotations

from typing import Any

from portal_web.sites import Site

# A link's deep link (session-api's ``flow``) → the section it opens on.
_FLOW_SECTIONS = {
    "payment_method_update": "payment-methods",
    "subscription_cancel": "plan",
}


def sign_in_url(site: Site | None, flow: dict[str, Any] | None) -> str | None:
    if site is None:
        return None
    section = _FLOW_SECTIONS.get(str((flow or {}).get("type")))
    return f"/s/{site.slug}" + (f"?next={section}" if section else "")
