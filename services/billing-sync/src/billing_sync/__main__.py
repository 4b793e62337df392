"""``python -m billing_sync``: serve webhooks and process them on ``billing_sync_port``."""

from __future__ import annotations

from billfold.logs import configure_logging
from billfold.service import run
from billfold.settings import load_settings
from billing_sync.app import SERVICE, create_app
from billing_sync.settings import BillingSyncSettings


def main() -> None:
    settings = load_settings(BillingSyncSettings)
    configure_logging(SERVICE, settings)
    run(create_app(settings), settings, settings.billing_sync_port)


if __name__ == "__main__":
    main()
