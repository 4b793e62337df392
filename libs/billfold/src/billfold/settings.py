"""Settings for every Billfold service, read once from ``BILLFOLD_*`` environment variables.

``Settings`` holds what every service shares (addresses, ports, logging, pools), so names
and defaults live in one place. A service with settings of its own that others must not
hold extends it in its own package (billing-sync's ``BillingSyncSettings`` carries the
Stripe key: no other service's settings object can read it, DESIGN Principle 2) and
loads that class with ``load_settings(cls)``. Defaults work for a local run against
services on 127.0.0.1.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from typing import Annotated, Literal, TypeVar, overload

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from billfold.http.client_ip import Network, parse_networks
from billfold.sealing import check_public_key

ENV_PREFIX = "BILLFOLD_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    database_url: str = "postgresql://postgres@127.0.0.1:5432/billfold"
    redis_url: str = "redis://127.0.0.1:6379/0"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    portal_base_url: str = "http://127.0.0.1:8081"

    host: str = "127.0.0.1"
    session_api_port: int = Field(default=8080, ge=1, le=65535)
    portal_web_port: int = Field(default=8081, ge=1, le=65535)
    billing_sync_port: int = Field(default=8082, ge=1, le=65535)
    notifier_port: int = Field(default=8083, ge=1, le=65535)

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # "auto": console lines on a terminal, JSON lines otherwise (containers, CI, files).
    log_format: Literal["auto", "json", "console"] = "auto"

    # Every Redis key is prefixed so several deployments (or test runs) can share a server.
    redis_prefix: str = "bf:"
    exchange: str = "billfold.events"
    db_pool_min: int = Field(default=2, ge=1, le=100)
    db_pool_max: int = Field(default=10, ge=1, le=200)
    max_body_bytes: int = Field(default=65536, ge=1024, le=10 * 1024 * 1024)
    # A request body must arrive whole within this many seconds (else 408): a client
    # trickling its body holds its own socket, never longer than this.
    body_read_timeout: float = Field(default=10.0, gt=0, le=300)
    # How long a request waits for a free pool connection before a 503 with Retry-After:
    # a saturated pool sheds load at once instead of queueing every tenant behind it.
    db_acquire_timeout: float = Field(default=5.0, gt=0, le=60)
    # Delivery limit for quorum queues before a message goes to the dead-letter queue.
    delivery_limit: int = Field(default=5, ge=1, le=100)
    # portal-web's deadline for one RPC call to billing-sync (seconds): an action answers
    # "could not complete, try again" within it when billing-sync is slow or down.
    rpc_timeout: float = Field(default=5.0, gt=0, le=60)
    default_session_ttl: int = Field(default=3600, ge=60, le=604800)
    # How often session-api looks for sessions that expired, to emit
    # portal_session.expired (seconds: the event's worst-case lateness).
    expiry_sweep_interval: float = Field(default=30.0, gt=0, le=3600)
    # The notifier's public key (billfold.sealing): producers seal links and sign-in
    # codes to it. Unset: a producer refuses to email (send_email) with a 4xx.
    notifier_public_key: str | None = None
    # The reverse proxies in front of the services (Ingress, load balancers), as CIDRs,
    # comma-separated: X-Forwarded-For is believed only from them (billfold.http.client_ip).
    # Empty: the socket's peer is the client.
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis:// or rediss://")
        return value

    @field_validator("amqp_url")
    @classmethod
    def _amqp_url(cls, value: str) -> str:
        if not value.startswith(("amqp://", "amqps://")):
            raise ValueError("must start with amqp:// or amqps://")
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _trusted_proxies(cls, value: object) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ValueError("must be a comma-separated list of CIDRs")
        networks = parse_networks(str(item) for item in items)
        return tuple(str(n) for n in networks)

    @property
    def trusted_proxy_networks(self) -> tuple[Network, ...]:
        return parse_networks(self.trusted_proxies)

    @field_validator("notifier_public_key")
    @classmethod
    def _notifier_key(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return check_public_key(value)

    @field_validator("portal_base_url")
    @classmethod
    def _portal_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class SettingsError(SystemExit):
    """Start-up stops with one line naming the offending variable."""


S = TypeVar("S", bound=Settings)


@overload
def load_settings() -> Settings: ...
@overload
def load_settings(cls: type[S]) -> S: ...
def load_settings(cls: type[Settings] = Settings) -> Settings:
    """Read ``cls`` (the shared ``Settings`` or a service's subclass) from the environment,
    or stop with one readable line naming the variable."""
    try:
        return cls()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ENV_PREFIX + str(first["loc"][0]).upper() if first["loc"] else ENV_PREFIX
        line = f"billfold: invalid setting {name}: {first['msg']}"
        print(line, file=sys.stderr)
        raise SettingsError(2) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
