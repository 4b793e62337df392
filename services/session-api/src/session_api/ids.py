"""Object ids and timestamps as the API shows them."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from billfold.http.responses import iso as iso


def new_id(prefix: str) -> str:
    """``site_…``, ``key_…``, ``ps_…``, ``cu_…``: a type prefix plus 96 random bits."""
    return f"{prefix}_{secrets.token_hex(12)}"


def utcnow() -> datetime:
    return datetime.now(UTC)
