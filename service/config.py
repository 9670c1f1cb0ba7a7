"""Settings, loaded once at start-up from a TOML file and `BRIDGE_<SECTION>__<KEY>` variables.

The environment overrides the file. Every value is validated and converted here, so the rest
of the bridge receives a `Settings` object it can trust. A bad value becomes one `ConfigError`
line that names the key, where it came from and what is wrong.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Self
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    HttpUrl,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import core_schema
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from service import profiles
from service.errors import ConfigError
from service.image_hosts import ImageHost
from service.image_hosts import parse as parse_image_host
from service.number_fields import NOT_A_BOOLEAN, Float, Int
from service.profile import Profile, Reader

if TYPE_CHECKING:
    from service.ssrf import CallbackPolicy

ENV_PREFIX = "BRIDGE_"
DEFAULT_CONFIG_PATH = Path("config/bridge.toml")
# The upstream of `[upstream]`, and of every watch that names none.
DEFAULT_UPSTREAM = "default"
UPSTREAM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
UPSTREAM_NAME_RULE = "1 to 32 lower-case letters, digits, - and _, starting with a letter or digit"
CONFIG_PATH_VARIABLE = "BRIDGE_CONFIG"

PositiveSeconds = Annotated[Float, Field(gt=0)]
# A DNS name or an IPv4 address (dot-separated labels); IPv6 addresses in brackets.
_HOST_NAME = re.compile(
    r"^([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?)+$|^\[[0-9A-Fa-f:.]+\]$"
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # Pairs of keys (lower, upper) whose values must come in that order.
    _ordered: ClassVar[tuple[tuple[str, str], ...]] = ()

    @model_validator(mode="after")
    def _in_order(self) -> Self:
        for lower, upper in self._ordered:
            if getattr(self, lower) > getattr(self, upper):
                raise ValueError(f"{lower} must not exceed {upper}")
        return self


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: Int = Field(8080, ge=0, le=65535)
    # On SIGTERM: seconds for in-flight polls and deliveries to finish before leases are
    # released for another process to take over.
    shutdown_grace_s: Float = Field(10.0, ge=0, le=600)
    # A second port for /livez, /readyz and /metrics only (unset: they are on the API port).
    # A sidecar's API listens on 127.0.0.1, which the kubelet's probes cannot reach.
    health_port: Annotated[int | None, NOT_A_BOOLEAN] = Field(None, ge=1, le=65535)
    health_host: str = "0.0.0.0"
    # Addresses (or networks, or "*") of proxies whose X-Forwarded-For and X-Forwarded-Proto
    # are believed: the client address of a request is then the one they forwarded (failed
    # authentications are counted per client address). Unset: uvicorn's FORWARDED_ALLOW_IPS
    # variable, else 127.0.0.1.
    forwarded_allow_ips: tuple[str, ...] | None = None
    # What one client may hold on either port, before any token is checked (see
    # service/http_server.py): bytes of a request head (request line and headers), header
    # fields, seconds for a whole request (head and body) to arrive, connections served at
    # once, and seconds an idle kept-alive connection stays open.
    max_header_bytes: Int = Field(16384, ge=1024, le=1 << 20)
    max_headers: Int = Field(100, ge=8, le=10_000)
    header_timeout_s: Float = Field(10.0, gt=0, le=300)
    max_connections: Int = Field(1000, ge=1, le=1_000_000)
    keepalive_timeout_s: Int = Field(5, ge=1, le=300)
    # Host names the API answers to besides loopback ones (localhost, 127.0.0.1, ::1), for
    # example a sidecar's or a Service's own names; "*.example.com" matches subdomains.
    # Without auth.tokens only these and loopback names are served (a page elsewhere cannot
    # reach the API by pointing a DNS name at 127.0.0.1); with tokens, empty allows any.
    allowed_hosts: tuple[str, ...] = ()

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        for host in hosts:
            name = host.removeprefix("*.")
            if not _HOST_NAME.fullmatch(name):
                raise ValueError(
                    f"{host!r} is not a host name; give names such as bridge.svc.local or "
                    "*.example.com, without a scheme or port"
                )
        return tuple(host.lower() for host in hosts)

    @model_validator(mode="after")
    def _distinct_ports(self) -> ServerSettings:
        if self.health_port is not None and self.health_port == self.port:
            raise ValueError("health_port must differ from port")
        return self


class _MaskedRepr:
    """A URL whose repr masks the credentials it carries, so that the settings, and whatever
    holds them, print safely in an exception report, a debugger or a log."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({mask_url_password(str(self))!r})"


class UpstreamUrl(_MaskedRepr, HttpUrl):
    """An upstream's `base_url`, which may carry a user name and password."""


class StoreUrl(_MaskedRepr, str):
    """`store.url`, which may carry the database's password."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(cls, handler(str))


class UpstreamSettings(_Section):
    base_url: UpstreamUrl = UpstreamUrl("https://betterwaifu.com")
    api_key: SecretStr | None = None
    request_timeout_s: PositiveSeconds = 10.0
    max_concurrency: Int = Field(64, ge=1, le=4096)
    # Request-rate caps (token buckets), across all keys and per API key; 0 is no cap. The
    # burst is how many requests may go at once after a quiet spell.
    max_requests_per_s: Float = Field(0.0, ge=0, le=1e6)
    request_burst: Int = Field(10, ge=1, le=1_000_000)
    max_requests_per_s_per_key: Float = Field(0.0, ge=0, le=1e6)
    request_burst_per_key: Int = Field(10, ge=1, le=1_000_000)
    # Circuit breaker: opens when at least `circuit_failure_ratio` of at least
    # `circuit_min_requests` requests within `circuit_window_s` were 5xx or unanswered, or when
    # `circuit_consecutive_failures` were in a row.
    circuit_breaker: bool = True
    circuit_window_s: Float = Field(10.0, ge=1, le=3600)
    circuit_min_requests: Int = Field(20, ge=1, le=1_000_000)
    circuit_failure_ratio: Float = Field(0.5, gt=0, le=1)
    circuit_consecutive_failures: Int = Field(20, ge=1, le=1_000_000)
    circuit_cooldown_s: Float = Field(5.0, gt=0, le=3600)
    circuit_max_cooldown_s: Float = Field(60.0, gt=0, le=86400)
    # How the bridge asks for a job and reads the answer: a built-in profile's name
    # (service/profiles/), or a table declaring one (service/profile.py).
    profile: Profile = Field(default_factory=lambda: profiles.builtin(profiles.DEFAULT))

    _ordered = (("circuit_cooldown_s", "circuit_max_cooldown_s"),)

    @field_validator("base_url")
    @classmethod
    def _appendable(cls, url: UpstreamUrl) -> UpstreamUrl:
        """Paths are appended to it: after a query or fragment they would change nothing."""
        if url.query is not None or url.fragment is not None:
            raise ValueError(
                "the request paths are appended to the base URL, which must end with its path; "
                "put query parameters in the profile's path template"
            )
        return url

    @field_validator("profile", mode="before")
    @classmethod
    def _built_in(cls, profile: Any) -> Any:
        """A name stands for the built-in profile of that name."""
        if not isinstance(profile, str):
            return profile
        if profile not in profiles.names():
            raise ValueError(
                f"no built-in profile is named {profile!r}; the built-in ones are "
                f"{', '.join(profiles.names())}, or declare one in a table"
            )
        return profiles.builtin(profile)

    @property
    def root(self) -> str:
        return str(self.base_url).rstrip("/")

    @property
    def bridge_key(self) -> str | None:
        """The configured `api_key` in clear, which every tenant's watches share by default."""
        return self.api_key.get_secret_value() if self.api_key is not None else None

    def reader(self) -> Reader:
        """The profile, ready to read answers."""
        return Reader.of(self.profile)


class StoreSettings(_Section):
    url: StoreUrl = StoreUrl("sqlite:///bridge.db")
    # At least 3 s: a lease is renewed every third of it (service/bridge.py), once a second at
    # most.
    lease_s: Float = Field(15.0, ge=3, le=300)
    # PostgreSQL connection pool of each process.
    pool_min_size: Int = Field(1, ge=0, le=100)
    pool_max_size: Int = Field(10, ge=1, le=100)

    _ordered = (("pool_min_size", "pool_max_size"),)

    @field_validator("url")
    @classmethod
    def _reachable(cls, url: StoreUrl) -> StoreUrl:
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            if str(path) == ":memory:":
                return url
            directory = path.parent.resolve()
            if not directory.is_dir():
                raise ValueError(f"directory {directory} does not exist")
            if not os.access(directory, os.W_OK):
                raise ValueError(f"directory {directory} is not writable")
            return url
        if url.startswith(("postgresql://", "postgres://")) or url == "memory://":
            return url
        raise ValueError(
            "use sqlite:///PATH (a file), postgresql://USER@HOST:PORT/DB or memory://"
            " (nothing kept)"
        )


class PollSettings(_Section):
    interval_s: Float = Field(2.5, ge=0.1, le=3600)
    timeout_s: Float = Field(300.0, gt=0, le=7 * 86400)
    # Bounds for the per-watch overrides `poll_interval_s` and `timeout_s`.
    min_interval_s: Float = Field(2.0, ge=0.1, le=3600)
    max_interval_s: Float = Field(3600.0, ge=0.1, le=3600)
    max_timeout_s: Float = Field(86400.0, gt=0, le=30 * 86400)
    jitter: Float = Field(0.1, ge=0, lt=1)
    max_backoff_s: Float = Field(60.0, gt=0, le=3600)
    not_found_grace_s: Float = Field(30.0, ge=0, le=3600)
    # "adaptive": learn the upstream's queue and processing times and poll where news is
    # likely (service/pacing.py); "fixed": every interval_s.
    strategy: Literal["adaptive", "fixed"] = "adaptive"

    # A timeout_s past max_timeout_s would refuse every registration without its own.
    _ordered = (
        ("min_interval_s", "interval_s"), ("interval_s", "max_interval_s"),
        ("timeout_s", "max_timeout_s"),
    )  # fmt: skip


class NamedUpstreamSettings(UpstreamSettings):
    """An upstream of `[upstreams.<name>]`. Its watches poll by `[poll]`, changed by the keys of
    its own `poll` table."""

    base_url: UpstreamUrl
    poll: PollSettings = PollSettings()


class SigningSecret(_Section):
    """A signing secret for watches registered without their own; `expires_at` ends an old
    one's use after a rotation."""

    secret: SecretStr
    expires_at: AwareDatetime | None = None

    @field_validator("secret")
    @classmethod
    def _whsec(cls, secret: SecretStr) -> SecretStr:
        from service.signing import check_secret

        check_secret(secret.get_secret_value())
        return secret


class DeliverySettings(_Section):
    timeout_s: Float = Field(15.0, gt=0, le=300)
    retry_schedule_s: tuple[PositiveSeconds, ...] = (
        5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400,
    )  # fmt: skip
    jitter: Float = Field(0.2, ge=0, lt=1)
    max_concurrency: Int = Field(64, ge=1, le=4096)
    # Of those, at most this many to one callback host (scheme, host and port).
    max_per_host: Int = Field(16, ge=1, le=4096)
    # Of those, at most this many of one tenant's webhooks, so that its slow receivers leave
    # the others slots; 0: half of max_concurrency.
    max_per_tenant: Int = Field(0, ge=0, le=4096)
    max_retry_after_s: Float = Field(3600.0, ge=0)
    max_response_bytes: Int = Field(4096, ge=0, le=1 << 20)
    payload_retention_days: Float = Field(30.0, gt=0)
    # Where the requests are made: "inline" in the bridge's process, or "process" in a sender
    # process beside it, so that sending uses a second core (see service/sender.py).
    sender: Literal["inline", "process"] = "inline"
    # Secrets that sign the webhooks of watches registered without a `secret`, current first;
    # during a rotation every unexpired one signs (receivers accept any of the signatures).
    signing_secrets: tuple[SigningSecret, ...] = ()

    _ordered = (("max_per_tenant", "max_concurrency"),)

    @property
    def per_tenant(self) -> int:
        """The per-tenant limit in effect (`max_per_tenant`, or its default)."""
        return self.max_per_tenant or max(1, self.max_concurrency // 2)

    @field_validator("signing_secrets")
    @classmethod
    def _current_first(cls, found: tuple[SigningSecret, ...]) -> tuple[SigningSecret, ...]:
        if found and found[0].expires_at is not None:
            raise ValueError(
                "the first signing secret is the current one and has no expires_at; list the "
                "new secret first and give the old one an expires_at"
            )
        return found

    def signing_secrets_at(self, now: float) -> list[str]:
        """The configured signing secrets still valid at `now`, current first."""
        return [
            entry.secret.get_secret_value()
            for entry in self.signing_secrets
            if entry.expires_at is None or entry.expires_at.timestamp() > now
        ]


def _network(value: str) -> IPv4Network | IPv6Network:
    return ip_network(value, strict=False)


class SecuritySettings(_Section):
    allow_private_callbacks: bool = False
    callback_allow_cidrs: tuple[
        Annotated[str, AfterValidator(lambda v: str(_network(v)))], ...
    ] = ()
    require_https: bool = False
    # Seconds a registration waits for its callback host's DNS answer (422 naming the host
    # past it), its wait for one of the threads of these lookups included (503 past it).
    callback_dns_timeout_s: Float = Field(5.0, gt=0, le=60)
    # Fernet key(s) encrypting stored secrets, comma-separated, newest first (the first
    # encrypts, all decrypt). `webhook-bridge new-encryption-key` makes one.
    encryption_key: SecretStr | None = None

    @field_validator("encryption_key")
    @classmethod
    def _fernet_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            from service.vault import parse_keys

            parse_keys(value.get_secret_value())
        return value

    @property
    def encryption_keys(self) -> list[str]:
        from service.vault import parse_keys

        key = self.encryption_key
        return parse_keys(key.get_secret_value()) if key is not None else []

    @property
    def allowed_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        return tuple(_network(cidr) for cidr in self.callback_allow_cidrs)

    def callback_policy(self) -> CallbackPolicy:
        """What callbacks may reach, for the registration check and the delivery connector."""
        from service.ssrf import CallbackPolicy

        return CallbackPolicy(
            allow_private=self.allow_private_callbacks,
            allow_cidrs=self.allowed_networks,
            require_https=self.require_https,
        )


_NAME_PATTERN = r"^[A-Za-z0-9_.:\-]{1,64}$"
TokenRole = Literal["full", "viewer"]


class ApiToken(_Section):
    """One API token: its name, its tenant (by default the name), its role, and the token,
    ideally as a SHA-256 hex digest. Role `full` may do everything the API and the dashboard
    offer; `viewer` may read (the API's GET requests, the dashboard's pages) but not act."""

    name: str = Field(pattern=_NAME_PATTERN)
    tenant: str | None = Field(None, pattern=_NAME_PATTERN)
    role: TokenRole = "full"
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    token: SecretStr | None = None

    @model_validator(mode="after")
    def _one_form(self) -> ApiToken:
        if (self.sha256 is None) == (self.token is None):
            raise ValueError(
                f"token {self.name!r}: give exactly one of sha256 (preferred; "
                "`webhook-bridge hash-token` makes one) or token"
            )
        return self

    @property
    def tenant_name(self) -> str:
        """The tenant whose watches the token reaches."""
        return self.tenant or self.name

    @property
    def read_only(self) -> bool:
        return self.role == "viewer"

    @property
    def digest(self) -> bytes:
        if self.sha256 is not None:
            return bytes.fromhex(self.sha256)
        assert self.token is not None
        return hashlib.sha256(self.token.get_secret_value().encode()).digest()


class AuthSettings(_Section):
    tokens: tuple[ApiToken, ...] = ()
    # Serve the API without tokens on a non-loopback address anyway (behind your own gateway).
    allow_unauthenticated: bool = False
    # Registrations each token may make: a sustained rate per second and a burst.
    registrations_per_s: Float = Field(20.0, gt=0)
    registration_burst: Int = Field(100, ge=1)
    # Failed authentications (API 401s, refused dashboard sign-ins) each client address may
    # make: a burst, then a sustained rate per minute; past them its requests answer 429
    # until it may try again, whatever token they carry.
    failed_auth_burst: Int = Field(20, ge=1, le=10_000)
    failed_auth_per_minute: Float = Field(10.0, gt=0, le=60_000)
    # Subscription changes (creations, deletions, enabling, disabling, rotations, test events;
    # from the API or the dashboard) each token may make: a sustained rate per minute and a burst.
    subscription_changes_per_min: Float = Field(60.0, gt=0)
    subscription_change_burst: Int = Field(20, ge=1)

    @field_validator("tokens")
    @classmethod
    def _unique(cls, tokens: tuple[ApiToken, ...]) -> tuple[ApiToken, ...]:
        names = [token.name for token in tokens]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"token names must be unique; repeated: {', '.join(duplicates)}")
        seen: dict[bytes, str] = {}
        for token in tokens:
            if token.digest in seen:
                raise ValueError(
                    f"tokens {seen[token.digest]!r} and {token.name!r} are the same token; "
                    "give each its own (`webhook-bridge hash-token` makes one)"
                )
            seen[token.digest] = token.name
        served = {token.tenant_name for token in tokens if not token.read_only}
        for token in tokens:
            if token.read_only and token.tenant_name not in served:
                raise ValueError(
                    f"viewer token {token.name!r} would see tenant {token.tenant_name!r}, "
                    "which no token with role full has; set its tenant to the name of the "
                    "API token whose watches it may see"
                )
        return tokens


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ApiSettings(_Section):
    # Seconds between the keep-alive comments of an event stream, so that proxies and clients
    # do not take a quiet stream for a dead one.
    sse_keepalive_s: PositiveSeconds = 15.0
    # Longest a long-poll (`GET /v1/watches/{id}/wait`) is held; a longer timeout_s is cut to it.
    max_wait_s: Float = Field(60.0, ge=0, le=60)
    # Event streams, long-polls and dashboard live streams each tenant may hold open at once,
    # per process: each holds a connection and reads the store every second.
    max_streams_per_tenant: Int = Field(20, ge=1, le=100_000)
    # Watches one redelivery of failed webhooks (POST /v1/watches/failed/redeliver, the
    # dashboard's "Redeliver N failed") sends again at most, newest first; the answer says how
    # many are left.
    max_redeliveries: Int = Field(100, ge=1, le=10_000)


class UiSettings(_Section):
    # The dashboard at /ui/ (service/ui). false: every /ui route answers 404.
    enabled: bool = True
    # Hours a dashboard sign-in lasts.
    session_hours: Float = Field(12.0, gt=0, le=24 * 30)
    # Hosts a watch's page may load its generated images from, as thumbnails linking to the
    # full size; the pages' Content-Security-Policy allows exactly these in img-src (grammar:
    # service/image_hosts.py). Empty: images are links only, nothing is loaded from elsewhere.
    image_hosts: tuple[str, ...] = ()

    @field_validator("image_hosts")
    @classmethod
    def _image_hosts(cls, entries: tuple[str, ...]) -> tuple[str, ...]:
        for entry in entries:
            parse_image_host(entry)
        return tuple(entry.strip().lower() for entry in entries)

    @property
    def image_sources(self) -> tuple[ImageHost, ...]:
        return tuple(parse_image_host(entry) for entry in self.image_hosts)


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Settings(BaseSettings):
    """The whole configuration. Build it with `load`, not directly."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    server: ServerSettings = ServerSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    upstreams: dict[str, NamedUpstreamSettings] = {}
    store: StoreSettings = StoreSettings()
    poll: PollSettings = PollSettings()
    delivery: DeliverySettings = DeliverySettings()
    security: SecuritySettings = SecuritySettings()
    auth: AuthSettings = AuthSettings()
    api: ApiSettings = ApiSettings()
    ui: UiSettings = UiSettings()
    log: LogSettings = LogSettings()

    @model_validator(mode="before")
    @classmethod
    def _poll_per_upstream(cls, data: Any) -> Any:
        """Each named upstream's `poll` table changes `[poll]`: its keys over the section's."""
        named = data.get("upstreams") if isinstance(data, dict) else None
        if not isinstance(named, dict):
            return data
        base = data.get("poll") or {}
        if isinstance(base, BaseModel):
            base = base.model_dump(exclude_unset=True)
        for entry in named.values():
            if isinstance(entry, dict) and isinstance(base, dict):
                own = entry.get("poll") or {}
                entry["poll"] = {**base, **own} if isinstance(own, dict) else own
        return data

    @field_validator("upstreams")
    @classmethod
    def _default_in_its_section(
        cls, named: dict[str, NamedUpstreamSettings]
    ) -> dict[str, NamedUpstreamSettings]:
        for name in named:
            if not UPSTREAM_NAME.fullmatch(name):
                raise ValueError(f"{name!r} cannot name an upstream: use {UPSTREAM_NAME_RULE}")
            if "__" in name or name.endswith("_"):
                # `__` separates the parts of a variable's name.
                raise ValueError(
                    f"{name!r} cannot name an upstream: BRIDGE_UPSTREAMS__{name.upper()}__API_KEY "
                    "would name another; use no __ and no _ at the end"
                )
        if DEFAULT_UPSTREAM in named:
            raise ValueError(
                f"the upstream named {DEFAULT_UPSTREAM!r} is the [upstream] section; "
                "configure it there, or give this one another name"
            )
        return named

    @property
    def upstream_names(self) -> tuple[str, ...]:
        """Every upstream's name, the default one first."""
        return (DEFAULT_UPSTREAM, *sorted(self.upstreams))

    def upstream_named(self, name: str) -> tuple[UpstreamSettings, PollSettings]:
        """An upstream's settings and its watches' poll settings; KeyError if none has `name`."""
        if name == DEFAULT_UPSTREAM:
            return self.upstream, self.poll
        named = self.upstreams[name]
        return named, named.poll

    @model_validator(mode="after")
    def _not_open_to_the_network(self) -> Settings:
        auth, host = self.auth, self.server.host
        if not auth.tokens and not auth.allow_unauthenticated and not is_loopback(host):
            raise ValueError(
                f"server.host is {host} but no auth.tokens are configured, so anyone who can "
                "reach it could use the API; add tokens (BRIDGE_AUTH__TOKENS, see "
                "`webhook-bridge hash-token`), listen on 127.0.0.1, or set "
                "auth.allow_unauthenticated=true if a gateway in front authenticates"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's contents arrive as init arguments; the environment wins over them.
        return (_MappingEnvSource(settings_cls, _ENVIRON_FOR_LOAD), init_settings)


# `load` reads variables from the mapping it is given rather than from os.environ, so tests and
# `check-config` can pass their own. Settings are built once, at start-up, in one thread.
_ENVIRON_FOR_LOAD: dict[str, str] = {}


class _MappingEnvSource(EnvSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        # The variables the source looks names up in (lower-cased: names are case-insensitive).
        self.env_vars = {name.lower(): value for name, value in environ.items()}

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        """JSON, as for any structured setting; but a profile may also be a built-in's name."""
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError:
            if field_name == "profile":
                return value
            raise


SECTIONS = frozenset(Settings.model_fields)


def env_name(location: tuple[str | int, ...]) -> str:
    """The variable of the setting at `location`: ("server", "port") is BRIDGE_SERVER__PORT."""
    return ENV_PREFIX + "__".join(str(part).upper() for part in location)


def _check_variable_names(environ: Mapping[str, str]) -> None:
    for name in environ:
        if not name.startswith(ENV_PREFIX) or name == CONFIG_PATH_VARIABLE:
            continue
        section, _, key = name.removeprefix(ENV_PREFIX).lower().partition("__")
        if section not in SECTIONS or not key:
            raise ConfigError(
                f"{name}: unknown setting; variables look like "
                f"BRIDGE_<SECTION>__<KEY> with a section among {', '.join(sorted(SECTIONS))}"
            )
        _check_status_word(name)


def _check_status_word(name: str) -> None:
    """Names are read in lower case, and a profile's status words are matched as spelt: a word
    spelt otherwise in a variable's name would never match."""
    parts = name.split("__")
    at = {"upstream": 1, "upstreams": 2}.get(parts[0].removeprefix(ENV_PREFIX).lower())
    if at is None or [part.lower() for part in parts[at : at + 2]] != ["profile", "statuses"]:
        return
    word = "__".join(parts[at + 2 :])
    if word and word != word.lower():
        statuses = "__".join(parts[: at + 2])
        raise ConfigError(
            f"{name}: the status word would be read as {word.lower()!r}, as variable names "
            f'are; give the words as spelt in JSON: {statuses}=\'{{"{word}": "..."}}\''
        )


def _read_file(path: Path, *, required: bool) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"config file {path} does not exist") from None
        return {}
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    except OSError as error:
        raise ConfigError(f"config file {path} cannot be read: {error.strerror}") from None


def load(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from `path` (or `BRIDGE_CONFIG`, or the default file) and `environ`.

    A missing default file is fine (built-in defaults apply); a file named explicitly must exist.
    """
    environ = os.environ if environ is None else environ
    explicit = path is not None or CONFIG_PATH_VARIABLE in environ
    path = path or Path(environ.get(CONFIG_PATH_VARIABLE, DEFAULT_CONFIG_PATH))
    _check_variable_names(environ)
    data = _read_file(path, required=explicit)
    bridge_env = {k: v for k, v in environ.items() if k.startswith(ENV_PREFIX)}
    _ENVIRON_FOR_LOAD.clear()
    _ENVIRON_FOR_LOAD.update(bridge_env)
    try:
        return Settings(**data)
    except ValidationError as error:
        raise ConfigError(_describe(error, path, bridge_env)) from None
    except SettingsError as error:  # a variable that should hold JSON (a list) does not
        raise ConfigError(_describe_json_error(error, bridge_env)) from None
    finally:
        _ENVIRON_FOR_LOAD.clear()


def _describe_json_error(error: SettingsError, environ: Mapping[str, str]) -> str:
    cause = str(error.__cause__ or error)
    section = re.search(r'field "(\w+)"', str(error))
    prefix = env_name((section.group(1),)) + "__" if section else ENV_PREFIX
    suspects = [name for name in sorted(environ) if name.startswith(prefix)]
    names = ", ".join(suspects) or "a BRIDGE_ variable"
    return (
        f"{names}: not valid JSON ({cause}); lists are written as JSON, e.g. [5, 300] "
        'or ["10.0.0.0/8"]'
    )


def _source(location: tuple[str, ...], path: Path, environ: Mapping[str, str]) -> str:
    """Where a value came from: its variable (or one holding it: a whole upstream's profile),
    or the section's variables, or the file."""
    for length in range(len(location), 1, -1):
        variable = env_name(location[:length])
        if variable in environ:
            return variable
    if len(location) >= 2:
        return str(path)
    prefix = env_name(location) + "__"
    variables = sorted(name for name in environ if name.startswith(prefix))
    return ", ".join(variables) if variables else str(path)


def _describe(error: ValidationError, path: Path, environ: Mapping[str, str]) -> str:
    lines = []
    for item in error.errors():
        # Past the names of keys, pydantic's location names its validators: not for people.
        location = tuple(
            part
            for part in item["loc"]
            if isinstance(part, str) and not part.startswith("function-")
        )
        key = ".".join(location)
        source = _source(location, path, environ)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown setting"
        if not key:  # a rule across sections names its keys itself
            lines.append(message)
            continue
        lines.append(f"{key} (from {source}): {message}")
    return "; ".join(lines)


def masked(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, secrets shown as `********`."""
    data = settings.model_dump(mode="json")
    data["store"]["url"] = mask_url_password(settings.store.url)
    data["upstream"]["base_url"] = mask_url_password(str(settings.upstream.base_url))
    for name, named in settings.upstreams.items():
        data["upstreams"][name]["base_url"] = mask_url_password(str(named.base_url))
    return data


def mask_url_password(url: str) -> str:
    """The URL with the credentials it carries masked: `scheme://user:********@host/...`, or
    `scheme://********@host/...` when the user name is all there is (it is then the secret),
    and a `password` query parameter's value (libpq reads one there too)."""
    parts = urlsplit(str(url))
    netloc, query = parts.netloc, parts.query
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:********@{host}" if colon else f"********@{host}"
    if query:
        query = "&".join(
            f"{name}=********" if name == "password" and sep else f"{name}{sep}{value}"
            for name, sep, value in (pair.partition("=") for pair in query.split("&"))
        )
    if (netloc, query) == (parts.netloc, parts.query):
        return str(url)  # reassembled, `sqlite:///x` would lose its empty host
    return urlunsplit(parts._replace(netloc=netloc, query=query))
