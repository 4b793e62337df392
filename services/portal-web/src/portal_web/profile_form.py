"""The profile edit form: the values as typed, checked here (each error beside its
field, in the customer's words) before the call goes to billing-sync."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from billfold.rpc import Address, TaxIdInput, UpdateBillingProfile
from portal_web import mirror
from portal_web.i18n import current
from portal_web.i18n import gettext as _

#: Tax id types offered in the form (Stripe's ``type``); others are kept but not offered.
TAX_ID_TYPES = ("eu_vat", "gb_vat", "ch_vat", "no_vat", "au_abn", "ca_bn", "us_ein", "in_gst")


@dataclass
class ProfileForm:
    """What the edit form shows: the values (as typed) and an error per field."""

    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    remove: set[str] = field(default_factory=set)
    form_error: str | None = None


FIELDS = ("name", "email", "phone", "line1", "line2", "postal_code", "city", "state", "country")


def form_from_profile(p: mirror.Profile) -> ProfileForm:
    address = p.address or {}
    values = {
        "name": p.name or "",
        "email": p.email or "",
        "phone": p.phone or "",
        **{k: str(address.get(k) or "") for k in ("line1", "line2", "postal_code", "city")},
        "state": str(address.get("state") or ""),
        "country": str(address.get("country") or ""),
        "tax_type": "",
        "tax_value": "",
    }
    return ProfileForm(values=values)


def countries() -> list[tuple[str, str]]:
    names = current().locale.territories
    return sorted(
        ((code, name) for code, name in names.items() if len(code) == 2 and code.isalpha()),
        key=lambda item: item[1],
    )


def validate(form: ProfileForm, tax_ids: list[dict[str, Any]]) -> UpdateBillingProfile | None:
    """The call for the typed values, or None with ``form.errors`` filled in."""
    v = form.values
    if not v["name"]:
        form.errors["name"] = _("Enter your name.")
    if v["email"] and not _email_ok(v["email"]):
        form.errors["email"] = _("Enter an email address like name@example.com.")
    if not v["email"]:
        form.errors["email"] = _("Enter your email address.")
    if v["phone"] and not all(c in "0123456789+()-. " for c in v["phone"]):
        form.errors["phone"] = _("Use only digits, spaces and + ( ) - .")
    if v["country"] and v["country"] not in dict(countries()):
        form.errors["country"] = _("Choose a country from the list.")
    has_address = any(v[k] for k in ("line1", "line2", "postal_code", "city", "state"))
    if has_address and not v["country"]:
        form.errors["country"] = _("Choose the country of your address.")
    if v["country"] and has_address and not v["line1"]:
        form.errors["line1"] = _("Enter the street and number.")
    if v["tax_value"] and v["tax_type"] not in TAX_ID_TYPES:
        form.errors["tax_type"] = _("Choose the kind of tax ID.")
    if v["tax_type"] and not v["tax_value"]:
        form.errors["tax_value"] = _("Enter the tax ID.")
    known = {str(t.get("id")) for t in tax_ids}
    if form.remove - known:
        form.form_error = _("This item no longer exists.")
    if form.errors or form.form_error:
        return None
    try:
        return UpdateBillingProfile(
            site_id="s",
            customer_id="c",
            name=v["name"],
            email=v["email"],
            phone=v["phone"],
            address=Address(
                line1=v["line1"],
                line2=v["line2"],
                postal_code=v["postal_code"],
                city=v["city"],
                state=v["state"],
                country=v["country"] or None,
            ),
            tax_ids_add=[TaxIdInput(type=v["tax_type"], value=v["tax_value"])]
            if v["tax_value"]
            else [],
            tax_ids_remove=sorted(form.remove),
        )
    except ValidationError as exc:
        for error in exc.errors():
            loc = [str(part) for part in error["loc"]]
            name = {"tax_ids_add": "tax_value", "address": loc[-1] if loc else ""}.get(
                loc[0] if loc else "", loc[0] if loc else ""
            )
            target = name if name in form.values else None
            message = _("Check this field.")
            if target is not None:
                form.errors.setdefault(target, message)
            else:
                form.form_error = message
        return None


def _email_ok(value: str) -> bool:
    local, at, domain = value.partition("@")
    return bool(local and at and "." in domain and " " not in value and "@" not in domain)
