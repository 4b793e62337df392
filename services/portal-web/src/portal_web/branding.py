"""A site's colours as CSS variables, with contrast guaranteed whatever the tenant picked.

Tenants choose a primary colour without thinking about contrast. For each scheme (light
page, dark page) we derive:

* ``--brand``: the colour used for buttons and links. If the tenant's colour has less
  than 4.5:1 contrast against the page background (WCAG AA for text), it is darkened
  (light scheme) or lightened (dark scheme) step by step until it passes;
* ``--on-brand``: black or white, whichever reads better on ``--brand`` (always passes:
  one of them has at least 4.58:1 on any colour).

The CSS is served as a file (``/brand/{site}/{version}.css``) because the page's CSP
forbids inline styles.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

from portal_web.sites import Site

RGB = tuple[int, int, int]

DEFAULT_BRAND = "#2f5bd3"
# The surfaces brand-coloured text sits on, per scheme: the page and the side panel
# (static/portal.css: --bg, --panel). The colour must pass on every one of them.
LIGHT_SURFACES: tuple[RGB, ...] = ((255, 255, 255), (245, 246, 248))
DARK_SURFACES: tuple[RGB, ...] = ((21, 23, 26), (31, 34, 38))
AA = 4.5

_HEX = re.compile(r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")


def parse(color: str | None) -> RGB | None:
    if not color:
        return None
    m = _HEX.match(color.strip())
    if m is None:
        return None
    digits = m.group(1)
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16))


def hex_(rgb: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _channel(c: int) -> float:
    s = c / 255
    return s / 12.92 if s <= 0.04045 else float(((s + 0.055) / 1.055) ** 2.4)


def luminance(rgb: RGB) -> float:
    r, g, b = (_channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: RGB, b: RGB) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def _mix(rgb: RGB, target: RGB, t: float) -> RGB:
    r, g, b = (round(c + (d - c) * t) for c, d in zip(rgb, target, strict=True))
    return (r, g, b)


def readable_on(backgrounds: tuple[RGB, ...], color: RGB, minimum: float = AA) -> RGB:
    """``color``, moved towards black or white (away from the ``backgrounds``, all light
    or all dark) until its contrast with each of them is at least ``minimum``."""

    def passes(c: RGB) -> bool:
        return all(contrast(c, b) >= minimum for b in backgrounds)

    if passes(color):
        return color
    target: RGB = (0, 0, 0) if luminance(backgrounds[0]) > 0.18 else (255, 255, 255)
    for step in range(1, 41):
        moved = _mix(color, target, step / 40)
        if passes(moved):
            return moved
    return target


def text_on(background: RGB) -> RGB:
    black: RGB = (0, 0, 0)
    white: RGB = (255, 255, 255)
    return black if contrast(black, background) >= contrast(white, background) else white


def colors(site: Site) -> dict[str, dict[str, str]]:
    """The brand colour and the text on it, per scheme, as the pages use them (and the
    JSON API gives them to a tenant's own UI)."""
    brand = parse(site.primary_color) or parse(DEFAULT_BRAND)
    assert brand is not None
    light = readable_on(LIGHT_SURFACES, brand)
    dark = readable_on(DARK_SURFACES, brand)
    return {
        "light": {"brand": hex_(light), "on_brand": hex_(text_on(light))},
        "dark": {"brand": hex_(dark), "on_brand": hex_(text_on(dark))},
    }


def css(site: Site) -> str:
    c = colors(site)
    light, dark = c["light"], c["dark"]
    return (
        f":root{{--brand:{light['brand']};--on-brand:{light['on_brand']}}}\n"
        "@media (prefers-color-scheme: dark){"
        f":root{{--brand:{dark['brand']};--on-brand:{dark['on_brand']}}}}}\n"
    )


def version(site: Site) -> str:
    """Changes when the colours change, so the file can be cached for long."""
    return _version(site.primary_color, site.accent_color)


@lru_cache(maxsize=4096)  # every page names it; the colours rarely change
def _version(primary: str | None, accent: str | None) -> str:
    return hashlib.sha256(f"{primary}|{accent}".encode()).hexdigest()[:12]
