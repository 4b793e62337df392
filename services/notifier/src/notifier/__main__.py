"""``python -m notifier``: consume events, send emails and webhooks; health and metrics
on ``settings.notifier_port``."""

from __future__ import annotations

import sys

from billfold.logs import configure_logging
from billfold.service import run
from notifier.app import SERVICE, create_app
from notifier.settings import load_notifier_settings


def main() -> None:
    settings = load_notifier_settings()
    missing = [
        name
        for name, value in (
            ("BILLFOLD_NOTIFIER_PRIVATE_KEY", settings.notifier_private_key),
            ("BILLFOLD_NOTIFIER_DATA_KEY", settings.notifier_data_key),
        )
        if value is None
    ]
    if missing:
        print(
            f"billfold: {' and '.join(missing)} must be set (`billfold notifier keygen`)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    configure_logging(SERVICE, settings)
    run(create_app(settings), settings, settings.notifier_port)


if __name__ == "__main__":
    main()
