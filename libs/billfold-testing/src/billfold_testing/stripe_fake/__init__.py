"""A stateful fake Stripe for tests and the local demo — never for production.

Run it with ``python -m billfold_testing.stripe_fake --port 12111`` or in-process with
:func:`create_app`; pytest fixtures live in :mod:`billfold_testing.stripe_fake.fixtures`.
See ``libs/billfold-testing/README.md`` for what it covers and what it does not.
"""

from .app import create_app
from .state import FakeState
from .webhooks import DeliveryBehaviour, RetryPolicy, sign

__all__ = ["DeliveryBehaviour", "FakeState", "RetryPolicy", "create_app", "sign"]
