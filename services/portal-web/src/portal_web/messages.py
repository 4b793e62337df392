"""The words for an action's result, carried across post/redirect/get as a fixed key
(``?done=cancelled``): the query string never carries text a page would show."""

from __future__ import annotations

from portal_web.i18n import gettext as _


def done_message(key: str) -> str | None:
    return {
        "cancelled": _("Your plan is cancelled. It stays active until the end of the period."),
        "resumed": _("Your plan continues. Nothing else changes."),
        "unpaused": _("Your plan is active again."),
        "default_set": _("Your default card is changed."),
        "removed": _("The card is removed."),
        "auto_pay_on": _("Auto-pay is on."),
        "auto_pay_off": _("Auto-pay is off: we will email you each invoice to pay."),
        "paid": _("Thank you, the invoice is paid."),
        "profile_saved": _("Your details are saved."),
        "card_added": _("Card added. It is now your default card."),
        "card_cancelled": _("The card was not changed."),
    }.get(key)


# What the drop-in's ``action`` event says after a done key: the action's name only
# (as ``actions.describe`` names it), never an id, amount or token. "card_cancelled"
# (the customer left Stripe's page) changed nothing, so it is no action.
DONE_ACTIONS = {
    "cancelled": "subscription.cancel",
    "resumed": "subscription.resume",
    "default_set": "payment_method.set_default",
    "removed": "payment_method.remove",
    "auto_pay_on": "subscription.auto_pay_on",
    "auto_pay_off": "subscription.auto_pay_off",
    "paid": "invoice.pay",
    "profile_saved": "profile.update",
    "card_added": "payment_method.update",
}
