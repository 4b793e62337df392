"""A portal session's sections and permissions: the names session-api stores and
portal-web enforces (DESIGN, principle 4), defined once for both, with the all-on
defaults and the site's overrides (session-api grants them to a minted link, portal-web
to a customer who signed in by email code).
"""

from __future__ import annotations

from typing import Any, Final

# Every section and permission, all on: what a session gets unless the site's defaults
# or the request say otherwise. Order is the portal's.
SECTION_DEFAULTS: Final[dict[str, dict[str, bool]]] = {
    "subscriptions": {"enabled": True, "allow_cancel": True},
    "invoices": {"enabled": True},
    "payment_methods": {"enabled": True, "allow_update": True},
    "usage": {"enabled": True},
    "profile": {"enabled": True, "allow_edit": True},
}


def with_site_defaults(site_defaults: dict[str, Any] | None) -> dict[str, dict[str, bool]]:
    """The all-on defaults with the site's ``default_sections`` laid over them (unknown
    sections, flags and non-boolean values in the site's setting are ignored)."""
    sections = {name: dict(flags) for name, flags in SECTION_DEFAULTS.items()}
    for name, flags in (site_defaults or {}).items():
        if name in sections and isinstance(flags, dict):
            for flag, value in flags.items():
                if flag in sections[name] and isinstance(value, bool):
                    sections[name][flag] = value
    return sections
