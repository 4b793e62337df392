"""Stripe list objects: ``limit``, ``starting_after``/``ending_before``, ``has_more``, filters."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .errors import invalid, not_found
from .forms import get_int, get_str

Json = dict[str, Any]


def list_object(data: list[Json], url: str, has_more: bool = False) -> Json:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def created_filter(params: Json, key: str = "created") -> Callable[[Json], bool]:
    """``created=ts`` or ``created[gte]=ts`` ... as Stripe's range filters."""
    spec = params.get(key)
    if spec is None or spec == "":
        return lambda _obj: True
    if isinstance(spec, str):
        exact = get_int(params, key)
        return lambda obj: obj.get(key) == exact
    bounds = {op: get_int(spec, op, param=f"{key}[{op}]") for op in ("gt", "gte", "lt", "lte")}

    def check(obj: Json) -> bool:
        value = obj.get(key) or 0
        return not (
            (bounds["gt"] is not None and value <= bounds["gt"])
            or (bounds["gte"] is not None and value < bounds["gte"])
            or (bounds["lt"] is not None and value >= bounds["lt"])
            or (bounds["lte"] is not None and value > bounds["lte"])
        )

    return check


def paginate(
    items: Iterable[Json],
    params: Json,
    url: str,
    render: Callable[[Json], Json],
    resource_name: str = "object",
) -> Json:
    """Cut one page out of ``items`` (already newest first and filtered)."""
    rows = list(items)
    limit = get_int(params, "limit")
    if limit is None:
        limit = 10
    if not 1 <= limit <= 100:
        raise invalid(
            "This value must be greater than or equal to 1 and less than or equal to 100.",
            param="limit",
        )
    after = get_str(params, "starting_after")
    before = get_str(params, "ending_before")
    ids = [row["id"] for row in rows]
    if after:
        if after not in ids:
            raise not_found(resource_name, after, "starting_after")
        start = ids.index(after) + 1
        page = rows[start : start + limit]
        has_more = start + limit < len(rows)
    elif before:
        if before not in ids:
            raise not_found(resource_name, before, "ending_before")
        end = ids.index(before)
        page = rows[max(0, end - limit) : end]
        has_more = end - limit > 0
    else:
        page = rows[:limit]
        has_more = len(rows) > limit
    return list_object([render(row) for row in page], url, has_more)
