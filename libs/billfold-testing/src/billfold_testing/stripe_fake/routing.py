"""Route tables: each resource module declares its handlers here; ``app.py`` mounts them.

Handlers are plain synchronous functions of a :class:`Ctx` returning the rendered object.
The state lives in memory and one handler runs to completion before the next, so no locks
are needed; anything slow (webhook delivery) happens in background tasks.

Every route also declares the parameters it accepts, beside its path
(``@routes.post("/v1/customers", params=Allow(CustomerCreateParams))``, see ``params.py``);
the app rejects any other parameter with Stripe's ``parameter_unknown`` before the handler runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .params import Allow
from .state import FakeState

Json = dict[str, Any]


@dataclass
class Ctx:
    state: FakeState
    params: Json
    path: dict[str, str] = field(default_factory=dict)

    def arg(self, name: str) -> str:
        return self.path[name]


Handler = Callable[[Ctx], Json]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    params: Allow


class Routes:
    def __init__(self) -> None:
        self.entries: list[Route] = []

    def _add(self, method: str, path: str, params: Allow) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.entries.append(Route(method, path, handler, params))
            return handler

        return register

    def get(self, path: str, *, params: Allow) -> Callable[[Handler], Handler]:
        return self._add("GET", path, params)

    def post(self, path: str, *, params: Allow) -> Callable[[Handler], Handler]:
        return self._add("POST", path, params)

    def delete(self, path: str, *, params: Allow) -> Callable[[Handler], Handler]:
        return self._add("DELETE", path, params)


#: where the app keeps its :class:`FakeState` (``request.app[STATE_KEY]``)
STATE_KEY = web.AppKey("stripe_fake_state", FakeState)
