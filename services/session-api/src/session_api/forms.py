"""Stripe-style form decoding: ``sections[invoices][enabled]=true`` → nested dicts.

Values stay strings here. The input models read them with ``Bool`` and ``Int``: from a
form body or a query string (``TEXT`` in the validation context) only the documented
spellings count, ``true``/``false`` and ASCII decimal digits; from JSON only a JSON
boolean and a JSON integer (validation is strict, so ``"120"`` or ``1`` for a boolean is
a 400). A form body and a JSON body then validate, and hash for idempotency, the same.
No parameter of this API is a list, so ``a[]=x`` is refused rather than guessed at.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, ValidationInfo

from billfold.http.errors import invalid

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")
MAX_DEPTH = 5

# Validation context flag: the values arrived as text (form body, query string).
TEXT = "text"
_DIGITS = re.compile(r"[0-9]+")
_MAX_DIGITS = 18


def _as_text(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get(TEXT))


def _bool(value: Any, info: ValidationInfo) -> Any:
    if _as_text(info):
        if value == "true":
            return True
        if value == "false":
            return False
        if isinstance(value, str):
            raise ValueError("must be true or false")
    elif not isinstance(value, bool) and value is not None:
        raise ValueError("must be a JSON boolean, true or false")
    return value


def _int(value: Any, info: ValidationInfo) -> Any:
    if _as_text(info):
        if isinstance(value, str):
            # fullmatch on [0-9]: str.isdigit() would take fullwidth and other digits.
            if not _DIGITS.fullmatch(value):
                raise ValueError("must be a whole number written in decimal digits")
            if len(value.lstrip("0")) > _MAX_DIGITS:
                raise ValueError("is too large")
            return int(value)
    elif isinstance(value, bool) or not isinstance(value, int | None):
        raise ValueError("must be a JSON integer")
    return value


# A boolean and an integer parameter, read as described above (strict validation
# rejects whatever these leave unconverted).
Bool = Annotated[bool, BeforeValidator(_bool)]
Int = Annotated[int, BeforeValidator(_int)]


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
