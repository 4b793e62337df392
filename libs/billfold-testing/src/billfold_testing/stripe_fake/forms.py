"""Decode Stripe's bracketed form encoding and coerce parameter values.

The official library sends ``items[0][price]=price_x&metadata[k]=v&expand[0]=customer``
(form body for POST, query string for GET/DELETE); this turns it back into nested dicts and
lists, and offers typed getters that fail with Stripe's own error codes.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from .errors import StripeError, invalid, missing_param

Json = dict[str, Any]
_TOKEN = re.compile(r"\[([^\]]*)\]")

#: hashes with free-form keys: ``metadata[1]=x`` is a key "1", not an array element
_FREE_FORM = frozenset({"metadata", "payload"})


def _split(key: str) -> list[str]:
    """``items[0][price]`` -> ``["items", "0", "price"]``.

    Inside a free-form hash the rest of the name is one key, brackets and all: the library
    sends key ``a[b]`` as ``metadata[a[b]]`` (``"%s[%s]" % (name, key)``, brackets unescaped),
    so ``metadata[a[b]]`` is ``["metadata", "a[b]"]``. The handler decides what to do with such
    a key (:func:`merge_metadata` rejects it, as Stripe does).
    """
    head, bracket, _rest = key.partition("[")
    parts = [head]
    if not bracket:
        return parts
    pos = len(head)
    while True:
        rest = key[pos:]
        if parts[-1] in _FREE_FORM and len(rest) > 2 and rest[0] == "[" and rest[-1] == "]":
            parts.append(rest[1:-1])
            break
        match = _TOKEN.search(key, pos)
        if match is None:
            break
        parts.append(match.group(1))
        pos = match.end()
    return parts


def _listify(node: Any, key: str = "") -> Any:
    # Dicts whose keys are all integers were arrays on the client side (``items[0]``).
    if isinstance(node, dict):
        fixed = {k: _listify(v, k) for k, v in node.items()}
        if fixed and key not in _FREE_FORM and all(k.isdigit() for k in fixed):
            return [fixed[k] for k in sorted(fixed, key=int)]
        return fixed
    if isinstance(node, list):
        return [_listify(v, key) for v in node]
    return node


def decode(raw: str) -> Json:
    """Decode one urlencoded string into nested params."""
    root: Json = {}
    for key, value in parse_qsl(raw, keep_blank_values=True):
        parts = _split(key)
        node: Any = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "":
                # ``expand[]=a`` style: append to a list.
                if not isinstance(node, list):
                    break
                if last:
                    node.append(value)
                else:
                    node.append({})
                    node = node[-1]
                continue
            nxt_is_append = not last and parts[i + 1] == ""
            if last:
                if isinstance(node, dict):
                    node[part] = value
            elif isinstance(node, dict):
                default: Any = [] if nxt_is_append else {}
                child = node.setdefault(part, default)
                if isinstance(child, str):  # ``metadata=`` then ``metadata[k]=``: keep the dict
                    child = node[part] = default
                node = child
    result = _listify(root)
    assert isinstance(result, dict)
    return result


# --- typed getters ---------------------------------------------------------------------------


def get_str(
    params: Json, key: str, *, required: bool = False, param: str | None = None
) -> str | None:
    value = params.get(key)
    if value is None:
        if required:
            raise missing_param(param or key)
        return None
    if not isinstance(value, str):
        raise invalid(f"Invalid string: {value!r}", param=param or key)
    return value


def req_str(params: Json, key: str, *, param: str | None = None) -> str:
    value = get_str(params, key, required=True, param=param)
    assert value is not None
    if value == "":
        raise invalid(
            f"You passed an empty string for '{param or key}'. We assume empty values are an "
            "attempt to unset a parameter; however '" + (param or key) + "' cannot be unset. "
            "You should remove '" + (param or key) + "' from your request or supply a "
            "non-empty value.",
            param=param or key,
        )
    return value


def get_int(params: Json, key: str, *, param: str | None = None) -> int | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    try:
        return int(str(value))
    except ValueError:
        raise invalid(
            f"Invalid integer: {value}", param=param or key, code="parameter_invalid_integer"
        ) from None


def get_bool(params: Json, key: str, *, param: str | None = None) -> bool | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    if value in ("true", True):
        return True
    if value in ("false", False):
        return False
    raise invalid(f"Invalid boolean: {value}", param=param or key)


def get_dict(params: Json, key: str) -> Json | None:
    value = params.get(key)
    if value is None:
        return None
    if value == "":
        return {}
    if not isinstance(value, dict):
        raise invalid(f"Invalid hash: {value!r}", param=key, code="parameter_invalid_empty")
    return value


def get_list(params: Json, key: str) -> list[Any]:
    value = params.get(key)
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return list(value.values())
    return [value]


def enum(
    params: Json, key: str, allowed: tuple[str, ...], *, param: str | None = None
) -> str | None:
    value = get_str(params, key, param=param)
    if value is not None and value not in allowed:
        raise StripeError(
            400,
            "invalid_request_error",
            f"Invalid {param or key}: must be one of {', '.join(allowed)}",
            param=param or key,
        )
    return value


def merge_metadata(current: Json, update: Any, *, param: str = "metadata") -> Json:
    """Stripe's metadata update rules: merge keys, ``""`` deletes one, ``metadata=""`` clears.

    ``param`` names the hash in errors (``items[0][metadata]`` for an item's metadata).

    Keys with square brackets are rejected, as on Stripe: its docs say keys "can contain any
    characters with one exception: you can't use square brackets", because its form parser
    reads ``metadata[a[b]]=v`` as a nested hash (``{"a": {"b": "v"}}``) and then refuses the
    non-string value (400, ``param: "metadata"``). A nested hash or array *value* arrives the
    same way (``metadata[a][b]=v`` decodes to key ``a][b``), so it is refused too.
    """
    if update is None:
        return current
    if update == "":
        return {}
    if not isinstance(update, dict):
        raise invalid("Invalid hash", param=param)
    merged = dict(current)
    for key, value in update.items():
        if "[" in key or "]" in key:
            raise invalid(
                f"Invalid metadata key: '{key}'. Metadata keys can't contain square brackets "
                "([ and ]), which Stripe parses as a nested hash; metadata values must be "
                "strings.",
                param=param,
            )
        if len(key) > 40:
            raise invalid(
                "Metadata keys can have a maximum length of 40 characters.",
                param=f"{param}[{key}]",
            )
        if value == "":
            merged.pop(key, None)
            continue
        if not isinstance(value, str) or len(value) > 500:
            raise invalid(
                "Metadata values can have a maximum length of 500 characters.",
                param=f"{param}[{key}]",
            )
        merged[key] = value
    if len(merged) > 50:
        raise invalid("You can have a maximum of 50 metadata keys.", param=param)
    return merged
