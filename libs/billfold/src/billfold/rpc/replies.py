"""Replies to RPC calls, and the exceptions both sides use for the typed errors.

A reply is ``RpcOk`` (the updated mirror object as a JSON object; billing-sync owns its
shape, portal-web renders it) or ``RpcErrorReply`` with one of four error bodies:

* ``not_found``: the object does not exist *or the calling customer does not own it*;
  the two are indistinguishable on purpose (DESIGN, tenant isolation);
* ``stripe_error``: Stripe refused; ``message`` is safe to show the customer, ``code``
  is Stripe's, and ``hosted_invoice_url`` is set when the customer must act on Stripe's
  page (3-D Secure, a decline);
* ``invalid_request``: the call itself is wrong (malformed, a rule such as "the default
  card cannot be removed");
* ``unavailable``: the server could not do it now (database down, a bug, a concurrent
  copy of the call still running). Never stored, so a retry runs the call again.

The server's handlers raise the same exceptions the client raises (``RpcNotFound``, …),
so one type means one thing on both sides. A missed deadline is not a reply: the client
raises ``RpcTimeout`` (a ``TimeoutError``) on its own clock.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter

JsonObject = dict[str, JsonValue]


class _Body(BaseModel):
    # Readers on an older version must still read a newer server's error.
    model_config = ConfigDict(frozen=True, extra="allow")

    message: str


class NotFoundBody(_Body):
    type: Literal["not_found"] = "not_found"
    code: str = "resource_missing"
    message: str = "No such object."


class StripeErrorBody(_Body):
    type: Literal["stripe_error"] = "stripe_error"
    code: str
    decline_code: str | None = None
    param: str | None = None
    hosted_invoice_url: str | None = None


class InvalidRequestBody(_Body):
    type: Literal["invalid_request"] = "invalid_request"
    code: str
    param: str | None = None


class UnavailableBody(_Body):
    type: Literal["unavailable"] = "unavailable"
    code: str = "unavailable"
    message: str = "The billing service is unavailable right now. Please try again."


ErrorBody = Annotated[
    NotFoundBody | StripeErrorBody | InvalidRequestBody | UnavailableBody,
    Field(discriminator="type"),
]


class RpcOk(BaseModel):
    model_config = ConfigDict(frozen=True)

    status: Literal["ok"] = "ok"
    call_id: str
    result: JsonObject


class RpcErrorReply(BaseModel):
    model_config = ConfigDict(frozen=True)

    status: Literal["error"] = "error"
    call_id: str | None
    error: ErrorBody


RpcReply = Annotated[RpcOk | RpcErrorReply, Field(discriminator="status")]

REPLY_ADAPTER: TypeAdapter[RpcReply] = TypeAdapter(RpcReply)


def parse_reply(raw: bytes | str | dict[str, Any]) -> RpcReply:
    """Read a reply from the wire or the ``rpc_calls`` table; raises ValidationError."""
    if isinstance(raw, dict):
        return REPLY_ADAPTER.validate_python(raw)
    return REPLY_ADAPTER.validate_json(raw)


def dump_reply(reply: RpcReply) -> bytes:
    return reply.model_dump_json().encode("utf-8")


# --- exceptions ----------------------------------------------------------------------------

_E = TypeVar("_E", bound="RpcError")


class RpcError(Exception):
    """An error reply. Raised by handlers (the server replies with ``body``) and by the
    client (from the reply it got)."""

    http_status: ClassVar[int] = 500

    def __init__(self, body: ErrorBody) -> None:
        self.body = body
        super().__init__(f"{body.type} ({body.code}): {body.message}")

    @property
    def code(self) -> str:
        return self.body.code

    @property
    def message(self) -> str:
        """Safe to show the customer."""
        return self.body.message

    @classmethod
    def _wrap(cls: type[_E], body: ErrorBody) -> _E:
        error = cls.__new__(cls)
        RpcError.__init__(error, body)
        return error


class RpcNotFound(RpcError):
    http_status = 404
    body: NotFoundBody

    def __init__(self, message: str | None = None) -> None:
        super().__init__(NotFoundBody() if message is None else NotFoundBody(message=message))


class RpcStripeError(RpcError):
    http_status = 402
    body: StripeErrorBody

    def __init__(
        self,
        code: str,
        message: str,
        *,
        decline_code: str | None = None,
        param: str | None = None,
        hosted_invoice_url: str | None = None,
    ) -> None:
        super().__init__(
            StripeErrorBody(
                code=code,
                message=message,
                decline_code=decline_code,
                param=param,
                hosted_invoice_url=hosted_invoice_url,
            )
        )

    @property
    def hosted_invoice_url(self) -> str | None:
        return self.body.hosted_invoice_url


class RpcInvalidRequest(RpcError):
    http_status = 400
    body: InvalidRequestBody

    def __init__(self, code: str, message: str, *, param: str | None = None) -> None:
        super().__init__(InvalidRequestBody(code=code, message=message, param=param))


class RpcUnavailable(RpcError):
    http_status = 503
    body: UnavailableBody

    def __init__(self, message: str | None = None, *, code: str = "unavailable") -> None:
        body = (
            UnavailableBody(code=code)
            if message is None
            else UnavailableBody(code=code, message=message)
        )
        super().__init__(body)


class RpcTimeout(TimeoutError):
    """The call's deadline passed without a reply. The call may or may not have run:
    retry it with the same ``call_id`` (``RpcClient.call_with_retry``) to find out
    without writing twice."""


_ERROR_TYPES: dict[str, type[RpcError]] = {
    "not_found": RpcNotFound,
    "stripe_error": RpcStripeError,
    "invalid_request": RpcInvalidRequest,
    "unavailable": RpcUnavailable,
}


def error_from_body(body: ErrorBody) -> RpcError:
    """The exception for an error reply's body (``RpcStripeError`` for a Stripe error…)."""
    return _ERROR_TYPES[body.type]._wrap(body)
