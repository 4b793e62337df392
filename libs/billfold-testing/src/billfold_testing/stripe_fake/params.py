"""Which request parameters each endpoint accepts, and Stripe's ``parameter_unknown`` error.

Real Stripe answers a parameter it does not know with a 400 ``parameter_unknown``
(``Received unknown parameter: items[0][pricee]``). The fake does the same, so a misspelt
parameter fails against the fake exactly as it would against Stripe.

Every route declares its allow-list next to its path (``@routes.post("/v1/customers",
params=Allow(CustomerCreateParams))``). An allow-list is generated from the official
``stripe`` library's typed request params (the ``TypedDict`` classes in ``stripe.params``,
generated from Stripe's OpenAPI spec), so it names *every* parameter Stripe accepts, not only
the ones the fake models: a known-but-unmodelled parameter (``description``,
``proration_behavior``...) is accepted and ignored, and the lists stay right as the library
updates. Nested hashes and arrays of hashes are checked too (``items[].price``,
``invoice_settings.default_payment_method``); free-form hashes such as ``metadata`` accept any
key. ``expand[]`` is accepted everywhere.
"""

from __future__ import annotations

import sys
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from stripe import RequestOptions, StripeObject
from typing_extensions import is_typeddict

from .errors import StripeError

Json = dict[str, Any]

# ``RequestOptions`` (``api_key``, ``idempotency_key``, ``stripe_account``...): every top-level
# params class inherits these keys, but the library sends them as headers, never as parameters.
_REQUEST_OPTIONS: Mapping[str, Any] = RequestOptions.__annotations__


@dataclass(frozen=True)
class Shape:
    """What a parameter may hold, as far as key names go.

    ``fields``: a hash with exactly these keys; ``values``: a hash with free-form keys (such as
    ``metadata``), each value shaped so; ``items``: an array of elements shaped so. A scalar
    has none of the three. A parameter can allow several (``Literal['']|List[...]``).
    """

    fields: Mapping[str, Shape] | None = None
    values: Shape | None = None
    items: Shape | None = None

    def merge(self, other: Shape) -> Shape:
        fields: dict[str, Shape] | None = None
        if self.fields is not None or other.fields is not None:
            fields = dict(self.fields or {})
            for key, shape in (other.fields or {}).items():
                fields[key] = fields[key].merge(shape) if key in fields else shape
        return Shape(
            fields=fields,
            values=_merge_opt(self.values, other.values),
            items=_merge_opt(self.items, other.items),
        )

    def names(self, prefix: str = "") -> Iterator[str]:
        """The allow-list in dotted form: ``items[].price``, ``metadata.*``, ``expand[]``."""
        if self.fields is not None:
            for key, shape in sorted(self.fields.items()):
                name = f"{prefix}.{key}" if prefix else key
                yield name
                yield from shape.names(name)
        if self.values is not None:
            yield f"{prefix}.*"
            yield from self.values.names(f"{prefix}.*")
        if self.items is not None:
            yield f"{prefix}[]"
            yield from self.items.names(f"{prefix}[]")


SCALAR = Shape()


def _merge_opt(a: Shape | None, b: Shape | None) -> Shape | None:
    if a is None:
        return b
    if b is None:
        return a
    return a.merge(b)


# --- from the library's TypedDicts ---------------------------------------------------------

_cache: dict[type, Shape] = {}
_building: set[type] = set()


def _hints(cls: type) -> dict[str, Any]:
    """The TypedDict's keys and their resolved types, without the inherited request options.

    (Those are left out before resolving: their annotations name types that only exist under
    ``TYPE_CHECKING`` in the library, so ``get_type_hints(cls)`` itself fails.)
    """
    own = {k: v for k, v in cls.__annotations__.items() if v is not _REQUEST_OPTIONS.get(k)}
    carrier = types.SimpleNamespace(__annotations__=own)
    return typing.get_type_hints(carrier, globalns=vars(sys.modules[cls.__module__]))


def _typed_dict(cls: type) -> Shape:
    if cls in _cache:
        return _cache[cls]
    if cls in _building:  # no params class refers to itself today; fail loudly if one does
        raise TypeError(f"recursive params type {cls.__qualname__}")
    _building.add(cls)
    try:
        shape = Shape(fields={key: shape_of(tp) for key, tp in _hints(cls).items()})
    finally:
        _building.discard(cls)
    _cache[cls] = shape
    return shape


def shape_of(tp: Any) -> Shape:
    """The :class:`Shape` of one resolved annotation from ``stripe.params``."""
    if is_typeddict(tp):
        return _typed_dict(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or origin is Literal or (origin is None and isinstance(tp, type)):
        return SCALAR  # str, int, bool, Decimal, None...
    if origin in (typing.Union, types.UnionType):
        shape = shape_of(args[0])
        for arg in args[1:]:
            shape = shape.merge(shape_of(arg))
        return shape
    if origin is not None and issubclass(origin, (list, tuple, Sequence)):
        return Shape(items=shape_of(args[0]) if args else SCALAR)
    if origin is not None and issubclass(origin, (dict, Mapping, StripeObject)):
        # ``Dict[str, str]``, and ``UntypedStripeObject[str]`` (metadata and the like).
        return Shape(values=shape_of(args[-1]) if args else SCALAR)
    raise TypeError(f"stripe_fake.params: cannot interpret parameter type {tp!r}")


# --- per-endpoint allow-lists ----------------------------------------------------------------

_EXPAND: Mapping[str, Shape] = {"expand": Shape(items=SCALAR)}


class Allow:
    """One endpoint's allow-list: the union of some ``stripe.params`` classes, plus ``expand``.

    ``extra`` adds hand-written names for what a params class lacks, in the dotted form
    :meth:`Shape.names` prints (``"items[].price"``, ``"metadata.*"``).
    """

    def __init__(self, *classes: type, extra: tuple[str, ...] = ()) -> None:
        self.classes = classes
        self.extra = extra
        shape = Shape(fields=_EXPAND)
        for cls in classes:
            if not is_typeddict(cls):
                raise TypeError(f"{cls!r} is not a TypedDict from stripe.params")
            shape = shape.merge(_typed_dict(cls))
        for name in extra:
            shape = shape.merge(_parse(name))
        self.shape = shape

    def __repr__(self) -> str:
        names = [c.__name__ for c in self.classes] + [repr(e) for e in self.extra]
        return f"Allow({', '.join(names)})"

    def names(self) -> list[str]:
        return list(self.shape.names())

    def check(self, params: Json) -> None:
        """Raise Stripe's 400 ``parameter_unknown`` if ``params`` has a name not allowed."""
        unknown = list(_unknown(self.shape, params, ""))
        if not unknown:
            return
        plural = "s" if len(unknown) > 1 else ""
        raise StripeError(
            400,
            "invalid_request_error",
            f"Received unknown parameter{plural}: {', '.join(unknown)}",
            code="parameter_unknown",
            param=unknown[0],
        )


def _parse(name: str) -> Shape:
    """``"items[].price"`` -> the Shape allowing exactly that name."""
    if not name:
        return SCALAR
    head, dot, rest = name.partition(".")
    inner = _parse(rest) if dot else SCALAR
    if head == "*":
        return Shape(values=inner)
    while head.endswith("[]"):
        head = head[:-2]
        inner = Shape(items=inner)
    return Shape(fields={head: inner}) if head else inner


def _path(prefix: str, key: str | int) -> str:
    return f"{prefix}[{key}]" if prefix else str(key)


def _unknown(shape: Shape, value: Any, prefix: str) -> Iterator[str]:
    # Only key names are checked; whether a value has the right type is the handler's job.
    if isinstance(value, dict):
        if shape.fields is not None:
            for key, sub in value.items():
                allowed = shape.fields.get(key)
                if allowed is None:
                    if shape.values is not None:
                        yield from _unknown(shape.values, sub, _path(prefix, key))
                    else:
                        yield _path(prefix, key)
                else:
                    yield from _unknown(allowed, sub, _path(prefix, key))
        elif shape.values is not None:
            for key, sub in value.items():
                yield from _unknown(shape.values, sub, _path(prefix, key))
    elif isinstance(value, list) and shape.items is not None:
        for i, sub in enumerate(value):
            yield from _unknown(shape.items, sub, _path(prefix, i))
