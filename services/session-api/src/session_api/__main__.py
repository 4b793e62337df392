"""``python -m session_api``: serve the API on ``settings.session_api_port``."""

from __future__ import annotations

from billfold.logs import configure_logging
from billfold.service import run
from billfold.settings import load_settings
from session_api.app import SERVICE, create_app


def main() -> None:
    settings = load_settings()
    configure_logging(SERVICE, settings)
    run(create_app(settings), settings, settings.session_api_port)


if __name__ == "__main__":
    main()
