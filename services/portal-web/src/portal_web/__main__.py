"""``python -m portal_web``: serve the customer portal on ``settings.portal_web_port``."""

from __future__ import annotations

from billfold.logs import configure_logging
from billfold.service import run
from billfold.settings import load_settings
from portal_web.app import SERVICE, create_app


def main() -> None:
    settings = load_settings()
    configure_logging(SERVICE, settings)
    run(create_app(settings), settings, settings.portal_web_port)


if __name__ == "__main__":
    main()
