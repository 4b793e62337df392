"""Stripe-style form decoding: ``sections[invoices][enabled]=true`` → nested dicts.

Values stay strings; the pydantic models coerce ``"true"``/``"false"`` and numbers, so a
form body and a JSON body validate (and hash, for idempotency) the same way.
No parameter of this API is a list, so ``a[]=x`` is refused rather than guessed at.
"""

from __future__ import annotations

import re
from typing import Any

from billfold.http.errors import invalid

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")
MAX_DEPTH = 5


def decode(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for raw_key, value in pairs:
        match = _KEY.match(raw_key)
        if match is None:
            raise invalid(f"Invalid form parameter name: {raw_key!r}.", param=raw_key)
        path = [match.group(1), *_PART.findall(match.group(2))]
        if len(path) > MAX_DEPTH:
            raise invalid("Form parameter nested too deeply.", param=raw_key)
        _put(out, path, value, raw_key)
    return out


def _put(target: dict[str, Any], path: list[str], value: str, raw_key: str) -> None:
    if "" in path:
        raise invalid("List parameters (name[]) are not supported.", param=raw_key)
    node: dict[str, Any] = target
    for i, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            name = path[0] + "".join(f"[{p}]" for p in path[1 : i + 1])
            raise invalid(f"Conflicting form parameters for {name}.", param=name)
        node = child
    last = path[-1]
    if last in node:
        raise invalid(f"Form parameter {raw_key} given more than once.", param=raw_key)
    node[last] = value
