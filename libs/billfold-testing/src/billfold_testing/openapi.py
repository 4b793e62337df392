"""Keeping a service's OpenAPI document true: the checks every documented API shares.

* ``check_schema``: an instance against one of the document's component schemas;
* ``documented_operations`` / ``live_operations``: the (method, path) pairs the document
  promises, each path under every server it names, and the routes the app serves;
* ``check_error_shape``: a 4xx/5xx body is Stripe's error shape, never a traceback;
* ``fuzz_cases`` and the encoders beside it: schemathesis cases (positive and negative)
  for the operations under a path prefix, sent through aiohttp's test client with
  ``call``, and ``response_schema`` to validate what comes back.

Used by session-api's and portal-web's tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, get_args
from urllib.parse import quote

import jsonschema  # type: ignore[import-untyped]
from aiohttp import web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict
from yarl import URL

from billfold.http.errors import ErrorType

METHODS = {"get", "post", "put", "patch", "delete"}
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
ERROR_TYPES = set(get_args(ErrorType))


def check_schema(doc: dict[str, Any], schema_name: str, instance: Any) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``instance`` fits the named schema
    (formats checked too)."""
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": doc["components"]}
    jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(instance)


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every (path, method, operation) of the document."""
    return [
        (path, method, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def _server_prefixes(servers: list[dict[str, Any]]) -> list[str]:
    return [s["url"].rstrip("/") for s in servers]


def documented_operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    """(METHOD, full path) for each operation under each of its servers (the
    operation's own ``servers``, else the path's, else the document's). A server URL
    with a variable (``/e/{token}``) stays a template, as the app's route does."""
    found: set[tuple[str, str]] = set()
    top = doc.get("servers", [{"url": "/"}])
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            servers = op.get("servers") or item.get("servers") or top
            for prefix in _server_prefixes(servers):
                found.add((method.upper(), prefix + path))
    return found


def live_operations(
    app: web.Application, include: Callable[[str], bool] = lambda _: True
) -> set[tuple[str, str]]:
    """(METHOD, route template) the app serves, HEAD and OPTIONS (answered for every
    GET, and CORS preflights) left out, for the paths ``include`` accepts."""
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method not in ("HEAD", "OPTIONS")
        and route.resource is not None
        and include(route.resource.canonical)
    }


def check_error_shape(status: int, raw: bytes, content_type: str) -> dict[str, Any]:
    """A 4xx/5xx body: JSON in Stripe's shape, no traceback."""
    assert content_type.startswith(JSON), (status, content_type, raw[:300])
    assert b"Traceback" not in raw
    body = json.loads(raw)
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"type", "code", "message", "param"} <= set(error), error
    assert error["type"] in ERROR_TYPES, error
    assert isinstance(error["code"], str)
    assert error["code"]
    assert isinstance(error["message"], str)
    assert error["message"]
    assert error["param"] is None or isinstance(error["param"], str), error
    return body  # type: ignore[no-any-return]


async def call(
    client: TestClient[Any, Any],
    method: str,
    path: str,
    *,
    headers: Any = None,
    data: bytes | str | None = None,
) -> tuple[int, bytes, str, Any]:
    """One request with an already percent-encoded path; (status, body, type, headers)."""
    resp = await client.request(method, URL(path, encoded=True), headers=headers, data=data)
    raw = await resp.read()
    return resp.status, raw, resp.headers.get("Content-Type", ""), resp.headers


# --- schemathesis ---------------------------------------------------------------------------


def scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


def form_pairs(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Stripe-style form fields: {"flow": {"type": "x"}} → flow[type]=x."""
    if isinstance(value, dict):
        pairs: list[tuple[str, str]] = []
        for key, item in value.items():
            pairs += form_pairs(item, f"{prefix}[{key}]" if prefix else str(key))
        return pairs
    if isinstance(value, list):
        pairs = []
        for i, item in enumerate(value):
            pairs += form_pairs(item, f"{prefix}[{i}]" if prefix else str(i))
        return pairs
    return [(prefix, scalar(value))]


def pct(text: str, safe: str = "") -> str:
    # surrogatepass: a lone surrogate goes out as its (invalid) UTF-8 bytes.
    return quote(text, safe=safe, errors="surrogatepass")


def encode_body(body: Any, media: str | None) -> bytes | None:
    from schemathesis.core import NotSet

    if isinstance(body, NotSet):
        return None
    if isinstance(body, bytes):
        return body
    if media == FORM:
        if isinstance(body, dict):
            pairs = form_pairs(body)
            return "&".join(f"{pct(k, '[]')}={pct(v)}" for k, v in pairs).encode()
        return scalar(body).encode("utf-8", "surrogatepass")
    return json.dumps(body).encode("utf-8", "surrogatepass")


def query_string(case: Any) -> str:
    pairs: list[tuple[str, str]] = []
    for key, value in (case.query or {}).items():
        values = value if isinstance(value, list) else [value]
        pairs += [(str(key), scalar(v)) for v in values]
    return "&".join(f"{pct(k)}={pct(v)}" for k, v in pairs)


def case_path(case: Any, real_id: str | None = None) -> str:
    """The case's path with its parameters filled in (``real_id`` for every one when
    given), percent-encoded."""
    path: str = case.path
    for name, value in (case.path_parameters or {}).items():
        encoded = real_id or pct(scalar(value))
        path = path.replace("{" + name + "}", encoded or "%20")
    return path


def fuzz_cases(
    doc: dict[str, Any], path_prefix: str, examples_per_mode: int = 30
) -> list[tuple[str, Any]]:
    """Every operation under ``path_prefix``: generated cases per generation mode
    (positive, negative), the same on every run (derandomized)."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.core.result import Ok
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_dict(doc)
    cases: list[tuple[str, Any]] = []

    def collect(strategy: Any, mode: str) -> None:
        @settings(
            max_examples=examples_per_mode,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case: Any) -> None:
            cases.append((mode, case))

        try:
            run()
        except Unsatisfiable:
            # An operation without parameters or body has no negative case to make.
            if mode == "positive":
                raise

    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        if operation.path.startswith(path_prefix):
            for mode in GenerationMode:
                collect(operation.as_strategy(generation_mode=mode), mode.value)
    return cases


_CASE_BODY: Any = object()


async def send_case(
    client: TestClient[Any, Any],
    case: Any,
    credential: dict[str, str],
    *,
    body: Any = _CASE_BODY,
    real_id: str | None = None,
) -> tuple[str, int, bytes, str] | None:
    """Send a schemathesis case with our ``credential`` headers instead of any it made
    up (``body`` and ``real_id`` replace the case's own body and path parameters).
    Returns (label, status, body, content type); None when aiohttp's client refuses to
    send a generated header value."""
    data = encode_body(case.body if body is _CASE_BODY else body, case.media_type)
    ours = {name.lower() for name in credential} | {"authorization", "x-api-key", "cookie"}
    headers = CIMultiDict(
        (str(k), str(v))
        for k, v in (case.headers or {}).items()
        if k.lower() not in ours and k.lower() != "content-type"
    )
    headers.update(credential)
    if data is not None and case.media_type is not None:
        headers["Content-Type"] = case.media_type
    query = query_string(case)
    path = case_path(case, real_id) + (f"?{query}" if query else "")
    try:
        status, raw, ctype, _ = await call(client, case.method, path, headers=headers, data=data)
    except ValueError:
        return None
    label = f"{case.method} {path[:200]} body={data[:200] if data else None!r}"
    return label, status, raw, ctype


def check_case_response(
    doc: dict[str, Any], case: Any, status: int, raw: bytes, ctype: str
) -> None:
    """What every answer promises: no 5xx, errors in Stripe's shape, a success with a
    body as documented for its status. Raises AssertionError or ValidationError."""
    assert status < 500, f"status {status}: {raw[:300]!r}"
    if status >= 400:
        check_error_shape(status, raw, ctype)
    elif status != 204:
        schema = response_schema(doc, case, status)
        assert schema is not None, f"undocumented {status}"
        jsonschema.Draft202012Validator(schema).validate(json.loads(raw))


def response_schema(doc: dict[str, Any], case: Any, status: int) -> dict[str, Any] | None:
    """The documented JSON schema of ``case``'s operation for ``status`` (None when the
    status is undocumented or has no body), resolvable on its own."""
    operation = doc["paths"][case.path][case.method.lower()]
    response = operation["responses"].get(str(status))
    if response is None or "content" not in response:
        return None
    schema = response["content"]["application/json"]["schema"]
    return {**schema, "components": doc["components"]}
