"""``expand[]``: replace id strings by the objects they name, along dotted paths.

Works on any rendered object or list (``data.customer`` for lists). Like Stripe, asking to
expand a field that is not an expandable reference is an error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import invalid
from .state import FakeState, kind_of

Json = dict[str, Any]
_MAX_DEPTH = 4  # Stripe allows at most four levels of expansion
Includer = Callable[[FakeState, Json], Any]
#: (object type, field) -> builder for Stripe's *includable* fields: absent from responses and
#: events unless asked for with ``expand[]`` ("This field is not included by default").
INCLUDABLE: dict[tuple[str, str], Includer] = {}


def _cannot(path: str) -> Exception:
    return invalid(f"This property cannot be expanded ({path}).", param="expand")


def _apply(state: FakeState, node: Any, segs: list[str], path: str) -> Any:
    if not segs or node is None:
        return node
    if isinstance(node, list):
        return [_apply(state, item, segs, path) for item in node]
    if not isinstance(node, dict):
        raise _cannot(path)
    key, rest = segs[0], segs[1:]
    if node.get("object") == "list" and key == "data":
        node["data"] = [_apply(state, item, rest, path) for item in node["data"]]
        return node
    include = INCLUDABLE.get((str(node.get("object")), key))
    if include is not None and key not in node:
        node[key] = _apply(state, include(state, node), rest, path)
        return node
    if key not in node:
        raise _cannot(path)
    value = node[key]
    if isinstance(value, str):
        if kind_of(value) is None:
            raise _cannot(path)
        value = state.render_id(value) or value
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = [state.render_id(v) or v for v in value]
    elif value is not None and not isinstance(value, (dict, list)):
        raise _cannot(path)
    node[key] = _apply(state, value, rest, path)
    return node


def expand(state: FakeState, obj: Json, paths: list[Any]) -> Json:
    for path in paths:
        if not isinstance(path, str) or not path:
            raise invalid("Invalid array", param="expand")
        segs = path.split(".")
        if len([s for s in segs if s != "data"]) > _MAX_DEPTH:
            raise invalid(
                f"You cannot expand more than {_MAX_DEPTH} levels of a property. Property: {path}",
                param="expand",
            )
        obj = _apply(state, obj, segs, path)
    return obj
