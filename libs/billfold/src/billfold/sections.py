"""A portal session's sections and permissions: the names session-api stores and
portal-web enforces (DESIGN, principle 4), defined once for both."""

from __future__ import annotations

from typing import Final

# Every section and permission, all on: what a session gets unless the site's defaults
# or the request say otherwise. Order is the portal's.
SECTION_DEFAULTS: Final[dict[str, dict[str, bool]]] = {
    "subscriptions": {"enabled": True, "allow_cancel": True},
    "invoices": {"enabled": True},
    "payment_methods": {"enabled": True, "allow_update": True},
    "usage": {"enabled": True},
    "profile": {"enabled": True, "allow_edit": True},
}
