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
    *,
    unfiltered: Iterable[Json] | None = None,
) -> Json:
    """Cut one page out of ``items`` (already newest first and filtered).

    ``unfiltered`` is every object a cursor may name, in list order, before the list's filters
    (``items`` must be a subsequence of it): as on Stripe, ``starting_after``/``ending_before``
    may name an object the filters exclude (a canceled subscription when listing
    ``status=active``, a customer with another email), and the page is cut at that object's
    place in the full ordering. A cursor that names no such object is a 404
    ``resource_missing`` on the cursor's param. Without ``unfiltered`` a cursor must be in
    ``items``.
    """
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
    cursor, param = (after, "starting_after") if after else (before, "ending_before")
    if not cursor:
        return list_object([render(row) for row in rows[:limit]], url, len(rows) > limit)
    order = {obj["id"]: i for i, obj in enumerate(rows if unfiltered is None else unfiltered)}
    at = order.get(cursor)
    if at is None:
        raise not_found(resource_name, cursor, param)
    if after:
        rest = [row for row in rows if order[row["id"]] > at]
        page = rest[:limit]
    else:
        rest = [row for row in rows if order[row["id"]] < at]
        page = rest[-limit:]
    return list_object([render(row) for row in page], url, len(rest) > limit)
