"""The customer's actions: one layer for every way of asking (HTML forms now, the JSON
API next), independent of HTML.

``Actions.perform(actor, call)`` takes who is asking (:class:`Actor`: the browser
session's principal plus where the request came from) and one RPC call from
``billfold.rpc.calls`` built for that principal's site and customer. It

1. checks the session may do it (:func:`permit`: a hidden section is
   ``ActionFailed(kind="hidden")``, a disallowed action ``kind="forbidden"``; the call's
   site and customer must be the principal's);
2. calls billing-sync over RPC with a deadline (``Settings.rpc_timeout``): one attempt,
   so the customer hears back within the deadline; the call's ``call_id`` makes a resend
   of the same call run once;
3. writes the audit row (``web.audit_log``) and the ``portal.action`` event (portal-web's
   outbox) in one transaction, for a success and for a failure alike;
4. returns the result (the updated mirror object, as billing-sync sends it) or raises
   :class:`ActionFailed` with a message the customer can read, in the active locale.

Failures never escape as anything else: Stripe's refusal keeps billing-sync's code (and
the hosted invoice page when the customer must act there); a timeout, an unanswered
queue, a broker that is down or any unexpected error is ``kind="unavailable"`` ("could
not complete, try again").
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import asyncpg
from aiohttp import web

from billfold import outbox
from billfold.events import PortalAction, PortalActionData
from billfold.http.client_ip import CLIENT_IP
from billfold.http.middlewares import REQUEST_ID
from billfold.logs import get_logger
from billfold.rpc import (
    Call,
    CallBase,
    CreateSetupSession,
    DetachPaymentMethod,
    JsonObject,
    PayInvoice,
    ResumeSubscription,
    RpcClient,
    RpcError,
    RpcInvalidRequest,
    RpcNotFound,
    RpcStripeError,
    RpcTimeout,
    SetAutoPay,
    SetCancelAtPeriodEnd,
    SetDefaultPaymentMethod,
    UpdateBillingProfile,
)
from portal_web.browser_sessions import Principal
from portal_web.i18n import SOURCE_LANGUAGE, current
from portal_web.i18n import gettext as _
from portal_web.ids import utcnow

log = get_logger("portal_web.actions")

SCHEMA = "web"

FailureKind = Literal["hidden", "forbidden", "not_found", "stripe_error", "invalid", "unavailable"]

#: HTTP status of each failure, for whichever front end answers it.
STATUS: dict[str, int] = {
    "hidden": 404,
    "forbidden": 403,
    "not_found": 404,
    "stripe_error": 402,
    "invalid": 400,
    "unavailable": 503,
}


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: the browser session, and where the request came from (for the audit)."""

    principal: Principal
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None

    @classmethod
    def of(cls, request: web.Request, principal: Principal) -> Actor:
        agent = request.headers.get("User-Agent")
        return cls(
            principal=principal,
            ip=request.get(CLIENT_IP, request.remote),
            user_agent=agent[:512] if agent else None,
            request_id=request.get(REQUEST_ID),
        )


class ActionFailed(Exception):
    """The action did not happen (or may not have: ``unavailable``). ``message`` is for
    the customer, in the active locale; ``param`` names the offending input when known;
    ``hosted_url`` is where the customer completes a payment on Stripe's page."""

    def __init__(
        self,
        kind: FailureKind,
        code: str,
        message: str,
        *,
        param: str | None = None,
        hosted_url: str | None = None,
    ) -> None:
        super().__init__(f"{kind} ({code})")
        self.kind: FailureKind = kind
        self.code = code
        self.message = message
        self.param = param
        self.hosted_url = hosted_url

    @property
    def status(self) -> int:
        return STATUS[self.kind]

    @property
    def public_code(self) -> str:
        """The code to carry to the customer's next page (``failure_message`` reads it):
        every kind of "try again" is one."""
        return "unavailable" if self.kind == "unavailable" else self.code


# --- what each call is, and who may make it ---------------------------------------------


def describe(call: Call) -> tuple[str, str | None]:
    """The audit's action name and object id for ``call``."""
    if isinstance(call, SetCancelAtPeriodEnd):
        name = "subscription.cancel" if call.cancel_at_period_end else "subscription.uncancel"
        return name, call.subscription_id
    if isinstance(call, ResumeSubscription):
        return "subscription.resume", call.subscription_id
    if isinstance(call, SetAutoPay):
        return ("subscription.auto_pay_on" if call.auto_pay else "subscription.auto_pay_off"), (
            call.subscription_id
        )
    if isinstance(call, CreateSetupSession):
        return "payment_method.update", None
    if isinstance(call, SetDefaultPaymentMethod):
        return "payment_method.set_default", call.payment_method_id
    if isinstance(call, DetachPaymentMethod):
        return "payment_method.remove", call.payment_method_id
    if isinstance(call, UpdateBillingProfile):
        return "profile.update", None
    if isinstance(call, PayInvoice):
        return "invoice.pay", call.invoice_id
    raise TypeError(f"not a portal action: {type(call).__name__}")


#: The session setting each kind of call needs: (section key, permission flag or None).
#: Resuming counts as managing cancellation: a tenant that does not let customers cancel
#: may have set the cancellation itself. Auto-pay is about how the customer pays, so it
#: lives with the payment methods.
_PERMISSIONS: dict[type[CallBase], tuple[str, str | None]] = {
    SetCancelAtPeriodEnd: ("subscriptions", "allow_cancel"),
    ResumeSubscription: ("subscriptions", "allow_cancel"),
    SetAutoPay: ("payment_methods", "allow_update"),
    CreateSetupSession: ("payment_methods", "allow_update"),
    SetDefaultPaymentMethod: ("payment_methods", "allow_update"),
    DetachPaymentMethod: ("payment_methods", "allow_update"),
    UpdateBillingProfile: ("profile", "allow_edit"),
    PayInvoice: ("invoices", None),
}


def allowed(principal: Principal, section: str, flag: str | None) -> bool:
    settings = principal.sections.get(section, {})
    return bool(settings.get("enabled")) and (flag is None or bool(settings.get(flag)))


def permit(principal: Principal, call_type: type[CallBase]) -> None:
    """Raise unless ``principal`` may make calls of ``call_type``: a hidden section is
    ``hidden`` (404: it does not exist for this session), a disallowed action
    ``forbidden`` (403), and so is every action of a read-only preview."""
    section, flag = _PERMISSIONS[call_type]
    settings = principal.sections.get(section, {})
    if not settings.get("enabled"):
        raise ActionFailed("hidden", "section_hidden", _("There is nothing at this address."))
    if flag is not None and not settings.get(flag):
        raise ActionFailed(
            "forbidden", "action_not_allowed", _("This action is not available in this session.")
        )
    # An operator's read-only preview (``billfold portal preview``): refused here too, so
    # every front end (forms, JSON API with any credential) refuses it, not only the
    # preview middleware's POSTs under /p/ and /e/.
    if principal.preview:
        raise ActionFailed(
            "forbidden",
            "preview_read_only",
            _("Actions are turned off in a preview. Nothing was changed."),
        )


# --- messages ----------------------------------------------------------------------------


def unavailable_message() -> str:
    return _("We could not complete this right now. Please try again in a moment.")


def known_message(code: str | None) -> str | None:
    """billing-sync's error codes (Stripe's, and its own rules) in the customer's
    language; None for a code we have no words for."""
    messages = {
        "authentication_required": _(
            "Your bank needs you to confirm this payment. Please continue on the payment page."
        ),
        "insufficient_funds": _("Your card has insufficient funds."),
        "expired_card": _("Your card has expired."),
        "incorrect_cvc": _("Your card's security code is incorrect."),
        "processing_error": _("An error occurred while processing your card. Please try again."),
        "incorrect_number": _("Your card number is incorrect."),
        "card_declined": _("Your card was declined. Please use another card or contact your bank."),
        "tax_id_invalid": _("The tax ID is not valid."),
        "email_invalid": _("The email address is not valid."),
        "invoice_already_paid": _("This invoice is already paid."),
        "invoice_not_editable": _("This invoice can no longer be paid."),
        "postal_code_invalid": _("The postal code is not valid."),
        "default_payment_method": _(
            "The default card cannot be removed. Make another card the default first."
        ),
        "no_default_payment_method": _("Add a card and make it the default before paying."),
        "section_hidden": _("There is nothing at this address."),
        "action_not_allowed": _("This action is not available in this session."),
        "resource_missing": _("This item no longer exists."),
    }
    return messages.get(code) if code else None


def _generic() -> str:
    return _("This change could not be made. Please check the details and try again.")


def _words(codes: tuple[str | None, ...], english: str) -> str:
    """Our words for the first known code; else billing-sync's own message, which is
    written for customers but only in English."""
    for code in codes:
        if (known := known_message(code)) is not None:
            return known
    return english if current().language == SOURCE_LANGUAGE and english else _generic()


def failure_message(code: str) -> str:
    """The customer's words for a failure ``code`` alone (a front end that carried only
    the code across a redirect, e.g. ``?failed=card_declined``)."""
    if code in ("unavailable", "not_served", "stripe_unavailable", "stripe_timeout"):
        return unavailable_message()
    return known_message(code) or _generic()


def failure_from_rpc(exc: RpcError) -> ActionFailed:
    if isinstance(exc, RpcStripeError):
        return ActionFailed(
            "stripe_error",
            exc.code,
            _words((exc.body.decline_code, exc.code), exc.message),
            param=exc.body.param,
            hosted_url=exc.hosted_invoice_url,
        )
    if isinstance(exc, RpcNotFound):
        return ActionFailed("not_found", exc.code, _("This item no longer exists."))
    if isinstance(exc, RpcInvalidRequest):
        return ActionFailed(
            "invalid", exc.code, _words((exc.code,), exc.message), param=exc.body.param
        )
    return ActionFailed("unavailable", exc.code, unavailable_message())


# --- the layer ---------------------------------------------------------------------------


def new_audit_id() -> str:
    return f"act_{secrets.token_hex(12)}"


class Actions:
    """Performs the customer's actions through billing-sync (see the module docstring)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        client: RpcClient,
        *,
        timeout: float,
        mirror_changed: Callable[[str, str], None] | None = None,
    ) -> None:
        self._pool = pool
        self._client = client
        self.timeout = timeout
        # Called with (site, customer) once billing-sync answered (it writes the mirror
        # before replying): the mirror cache reads that customer afresh, so the page
        # after the action's redirect never waits for the trigger's notification.
        self._mirror_changed = mirror_changed

    async def perform(self, actor: Actor, call: Call) -> JsonObject:
        """Run ``call`` for ``actor``; the result, or :class:`ActionFailed`."""
        principal = actor.principal
        permit(principal, type(call))
        if (call.site_id, call.customer_id) != (principal.site_id, principal.customer_id):
            # A bug in the front end, never the customer's doing: refuse as not found.
            raise ActionFailed("not_found", "resource_missing", _("This item no longer exists."))
        action, target = describe(call)
        failure: ActionFailed | None = None
        result: JsonObject | None = None
        try:
            result = await self._client.call(call, timeout=self.timeout)
        except RpcError as exc:
            failure = failure_from_rpc(exc)
        except (RpcTimeout, ConnectionError) as exc:
            log.warning("action_unavailable", action=action, error=type(exc).__name__)
            failure = ActionFailed("unavailable", "unavailable", unavailable_message())
        except Exception:  # never a 500 for an action: the customer can try again
            log.exception("action_failed_unexpectedly", action=action)
            failure = ActionFailed("unavailable", "unavailable", unavailable_message())
        if self._mirror_changed is not None:
            # Also after a failure: a timed-out call may still have changed the mirror.
            self._mirror_changed(principal.site_id, principal.customer_id)
        await self._record(actor, call, action, target, failure)
        if failure is not None:
            log.info("action_refused", action=action, kind=failure.kind, code=failure.code)
            raise failure
        log.info("action_done", action=action, target=target)
        assert result is not None
        return result

    async def _record(
        self,
        actor: Actor,
        call: Call,
        action: str,
        target: str | None,
        failure: ActionFailed | None,
    ) -> None:
        """The audit row and the ``portal.action`` event, in one transaction. Written after
        the call (its outcome is part of the record); if Postgres fails here the change
        at Stripe stands and the log says the record is missing."""
        p = actor.principal
        audit_id = new_audit_id()
        outcome = failure.kind if failure is not None else "ok"
        code = failure.code if failure is not None else None
        now = utcnow()
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    """
                    INSERT INTO web.audit_log (id, site_id, customer_id, portal_session_id,
                        browser_session_id, action, object_id, outcome, error_code, call_id,
                        ip, user_agent, request_id, created_at, sign_in_id)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                    """,
                    audit_id,
                    p.site_id,
                    p.customer_id,
                    p.portal_session_id,
                    p.id,
                    action,
                    target,
                    outcome,
                    code,
                    call.call_id,
                    actor.ip,
                    actor.user_agent,
                    actor.request_id,
                    now,
                    p.sign_in_id,
                )
                await outbox.enqueue(
                    conn,
                    SCHEMA,
                    PortalAction(
                        site_id=p.site_id,
                        request_id=actor.request_id,
                        data=PortalActionData(
                            customer_id=p.customer_id,
                            action=action,
                            target=target,
                            session_id=p.portal_session_id,
                            sign_in_id=p.sign_in_id,
                            browser_session_id=p.id,
                            audit_id=audit_id,
                            outcome=outcome,
                            error_code=code,
                            at=now,
                        ),
                    ),
                    ordering_key=p.customer_id,
                )
        except Exception:
            log.exception("action_audit_failed", action=action, outcome=outcome)


ACTIONS: web.AppKey[Actions] = web.AppKey("actions", Actions)
