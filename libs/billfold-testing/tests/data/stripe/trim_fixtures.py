"""Regenerate ``fixtures3.trimmed.json`` from Stripe's full ``fixtures3.json``.

Keeps only the example objects of the resources the fake serves (``shapes.resources()``), so
the shape tests run in a plain clone. Usage, from the repository root::

    uv run --no-sync python libs/billfold-testing/tests/data/stripe/trim_fixtures.py \\
        ../shared/stripe/fixtures3.json

Then update ``SOURCE`` here with the commit the full file came from.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from billfold_testing.stripe_fake import shapes

HERE = Path(__file__).resolve().parent
TRIMMED = HERE / "fixtures3.trimmed.json"


def trim(full: dict[str, object]) -> dict[str, object]:
    resources = full["resources"]
    assert isinstance(resources, dict)
    wanted = shapes.resources()
    missing = [name for name in wanted if name not in resources]
    if missing:
        raise SystemExit(f"not in the full file: {', '.join(missing)}")
    return {"resources": {name: resources[name] for name in wanted}}


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit(f"usage: {argv[0]} PATH/TO/fixtures3.json")
    full = json.loads(Path(argv[1]).read_text())
    TRIMMED.write_text(json.dumps(trim(full), indent=1, sort_keys=True) + "\n")
    print(f"wrote {TRIMMED}")


if __name__ == "__main__":
    main(sys.argv)
