"""Loading settings: file, environment, and one clear line per bad value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from service import config, signing, vault
from service.bridge import Bridge
from service.errors import ConfigError

DEFAULT_FILE = Path(__file__).parents[2] / "config" / "bridge.toml"


def test_defaults_match_the_documented_file() -> None:
    """The shipped config file states exactly the built-in defaults."""
    from_file = config.load(DEFAULT_FILE, environ={})
    assert config.masked(from_file) == config.masked(config.Settings())


def test_documented_defaults() -> None:
    """The defaults are the ones the README's table promises."""
    settings = config.Settings()
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 8080)
    assert settings.upstream.root == "https://betterwaifu.com"
    assert settings.upstream.api_key is None
    assert settings.store.url == "sqlite:///bridge.db"
    assert (settings.poll.interval_s, settings.poll.timeout_s) == (2.5, 300.0)
    assert settings.delivery.timeout_s == 15.0
    assert list(settings.delivery.retry_schedule_s) == [
        5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400,
    ]  # fmt: skip
    assert settings.security.allow_private_callbacks is False


@pytest.mark.parametrize(
    ("settings", "per_tenant"),
    [
        ({}, 32),  # half of the default 64
        ({"max_concurrency": 10}, 5),  # half of what is set
        ({"max_concurrency": 1}, 1),  # never 0
        ({"max_concurrency": 10, "max_per_tenant": 10}, 10),  # as set
    ],
)
def test_the_per_tenant_limit_defaults_to_half_of_the_slots(
    settings: dict[str, int], per_tenant: int
) -> None:
    """`delivery.max_per_tenant` 0 is half of max_concurrency."""
    assert config.DeliverySettings(**settings).per_tenant == per_tenant


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    """BRIDGE_<SECTION>__<KEY> wins over the file; lists are JSON."""
    path = tmp_path / "bridge.toml"
    path.write_text("[poll]\ninterval_s = 3.0\ntimeout_s = 100\n")
    settings = config.load(
        path,
        environ={"BRIDGE_POLL__INTERVAL_S": "2.2", "BRIDGE_DELIVERY__RETRY_SCHEDULE_S": "[1, 2]"},
    )
    assert settings.poll.interval_s == 2.2
    assert settings.poll.timeout_s == 100
    assert settings.delivery.retry_schedule_s == (1, 2)


def test_config_path_from_the_environment(tmp_path: Path) -> None:
    """BRIDGE_CONFIG chooses the file."""
    path = tmp_path / "other.toml"
    path.write_text("[server]\nport = 9999\n")
    assert config.load(environ={"BRIDGE_CONFIG": str(path)}).server.port == 9999


def test_secrets_are_masked() -> None:
    """check-config shows that a key is set, never the key."""
    settings = config.load(DEFAULT_FILE, environ={"BRIDGE_UPSTREAM__API_KEY": "bw_secret123"})
    assert settings.upstream.api_key is not None
    assert settings.upstream.api_key.get_secret_value() == "bw_secret123"
    assert "bw_secret123" not in str(config.masked(settings))
    assert "bw_secret123" not in repr(settings)


async def test_no_secret_prints_with_the_settings() -> None:
    """No secret of the settings shows in the repr or str of the settings, nor of the services
    built from them (an exception report, a debugger or a log prints those); the URLs show
    with their passwords masked."""
    encryption_key, signing_secret = vault.new_key(), signing.new_secret()
    settings = config.load(
        environ={
            "BRIDGE_STORE__URL": "postgresql://bridge:store-password@db/bridge",
            "BRIDGE_UPSTREAM__BASE_URL": "https://bridge:upstream-password@up.example/api",
            "BRIDGE_UPSTREAM__API_KEY": "upstream-key",
            "BRIDGE_UPSTREAMS__OTHER__BASE_URL": "https://other-password@other.example",
            "BRIDGE_UPSTREAMS__OTHER__API_KEY": "other-key",
            "BRIDGE_SECURITY__ENCRYPTION_KEY": encryption_key,
            "BRIDGE_DELIVERY__SIGNING_SECRETS": json.dumps([{"secret": signing_secret}]),
            "BRIDGE_AUTH__TOKENS": json.dumps([{"name": "acme", "token": "acme-token"}]),
        }
    )
    bridge = Bridge.build(settings)
    printed = "\n".join((repr(settings), str(settings), repr(bridge), str(bridge)))
    for transport in bridge.upstream_http.values():
        await transport.aclose()
    await bridge.sender.aclose()
    bridge.lookups.close()
    secrets = [
        "store-password", "upstream-password", "upstream-key", "other-password", "other-key",
        encryption_key, signing_secret, "acme-token",
    ]  # fmt: skip
    assert [secret for secret in secrets if secret in printed] == []
    assert "postgresql://bridge:********@db/bridge" in printed
    assert "https://bridge:********@up.example/api" in printed


@pytest.mark.parametrize(
    ("environ", "toml", "message"),
    [
        # a wrong type names the key and the variable it came from
        ({"BRIDGE_POLL__INTERVAL_S": "abc"}, "",
         "poll.interval_s (from BRIDGE_POLL__INTERVAL_S): Input should be a valid number"),
        # an unknown key inside a known section
        ({"BRIDGE_POLL__INTERVALS": "3"}, "",
         "poll.intervals (from BRIDGE_POLL__INTERVALS): unknown"),
        # an unknown section
        ({"BRIDGE_POLLING__INTERVAL_S": "3"}, "", "BRIDGE_POLLING__INTERVAL_S: unknown setting"),
        # an unknown key in the file names the file
        ({}, "[poll]\nintervall_s = 3\n", "poll.intervall_s (from "),
        # a directory that does not exist for the SQLite file
        ({"BRIDGE_STORE__URL": "sqlite:////no/such/dir/bridge.db"}, "",
         "store.url (from BRIDGE_STORE__URL): directory /no/such/dir does not exist"),
        # an unknown store scheme
        ({"BRIDGE_STORE__URL": "mysql://x"}, "", "store.url (from BRIDGE_STORE__URL): use sqlite"),
        # a bad CIDR
        ({"BRIDGE_SECURITY__CALLBACK_ALLOW_CIDRS": '["10.0.0.0/33"]'}, "",
         "security.callback_allow_cidrs"),
        # out of range
        ({"BRIDGE_SERVER__PORT": "70000"}, "",
         "server.port (from BRIDGE_SERVER__PORT): Input should be less"),
        # inconsistent bounds name the variables that were set
        ({"BRIDGE_POLL__MIN_INTERVAL_S": "5"}, "",
         "poll (from BRIDGE_POLL__MIN_INTERVAL_S): min_interval_s must not exceed interval_s"),
        # a default interval no watch could ask for
        ({"BRIDGE_POLL__MAX_INTERVAL_S": "2"}, "",
         "poll (from BRIDGE_POLL__MAX_INTERVAL_S): interval_s must not exceed max_interval_s"),
        # a default timeout that every registration without its own would be refused for
        ({"BRIDGE_POLL__MAX_TIMEOUT_S": "60"}, "",
         "poll (from BRIDGE_POLL__MAX_TIMEOUT_S): timeout_s must not exceed max_timeout_s"),
        # a tenant's share larger than the whole
        ({"BRIDGE_DELIVERY__MAX_PER_TENANT": "65"}, "",
         "delivery (from BRIDGE_DELIVERY__MAX_PER_TENANT): max_per_tenant must not exceed"),
        # a list that is not JSON names the variable and shows the right spelling
        ({"BRIDGE_DELIVERY__RETRY_SCHEDULE_S": "[5, 'x']"}, "",
         "BRIDGE_DELIVERY__RETRY_SCHEDULE_S: not valid JSON"),
        # an image host given as a URL with a path says what to write instead
        ({"BRIDGE_UI__IMAGE_HOSTS": '["https://images.example.com/x"]'}, "",
         "ui.image_hosts (from BRIDGE_UI__IMAGE_HOSTS): 'https://images.example.com/x' is a URL "
         "with a path; give its host alone (images.example.com)"),
        # a scheme alone would allow every host: it is not a host
        ({}, '[ui]\nimage_hosts = ["https:"]\n', "'https:' is a scheme, not a host"),
        # not TOML at all
        ({}, "[poll\n", "is not valid TOML"),
        # A list of numbers, each one checked.
        ({}, "[delivery]\nretry_schedule_s = [5, false]\n",
         "delivery.retry_schedule_s (from {path}): false is not a number"),
        # JSON in a variable has booleans too.
        ({"BRIDGE_UPSTREAMS__STUDIO__BASE_URL": "https://studio.example",
          "BRIDGE_UPSTREAMS__STUDIO__POLL": '{"timeout_s": true}'}, "",
         "upstreams.studio.poll.timeout_s (from BRIDGE_UPSTREAMS__STUDIO__POLL): true is not a "
         "number"),
        # A variable's plain "true" was never a number.
        ({"BRIDGE_POLL__TIMEOUT_S": "true"}, "",
         "poll.timeout_s (from BRIDGE_POLL__TIMEOUT_S): Input should be a valid number"),
    ],
)  # fmt: skip
def test_bad_values_give_one_clear_line(
    tmp_path: Path, environ: dict[str, str], toml: str, message: str
) -> None:
    """Each bad value stops loading with one line that names the key (and where it came from:
    {path} is the file's) and the problem."""
    path = tmp_path / "bridge.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as raised:
        config.load(path, environ=environ)
    assert message.replace("{path}", str(path)) in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_named_file_must_exist(tmp_path: Path) -> None:
    """--config pointing nowhere is an error, not a silent fallback to defaults."""
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "missing.toml", environ={})


def test_store_password_is_masked() -> None:
    """check-config never prints the password inside the store URL."""
    settings = config.load(
        DEFAULT_FILE, environ={"BRIDGE_STORE__URL": "postgresql://bridge:hunter2@db:5432/bridge"}
    )
    assert config.masked(settings)["store"]["url"] == "postgresql://bridge:********@db:5432/bridge"


@pytest.mark.parametrize(
    ("base_url", "shown"),
    [
        ("https://user:s3cret@jobs.example", "https://user:********@jobs.example/"),
        ("https://tok_abc123@jobs.example/v2", "https://********@jobs.example/v2"),  # a bare token
        ("https://jobs.example", "https://jobs.example/"),  # nothing to hide
    ],
)
def test_upstream_credentials_are_masked(base_url: str, shown: str) -> None:
    """check-config never prints credentials written into upstream.base_url."""
    settings = config.load(DEFAULT_FILE, environ={"BRIDGE_UPSTREAM__BASE_URL": base_url})
    printed = config.masked(settings)
    assert printed["upstream"]["base_url"] == shown
    assert "s3cret" not in str(printed)
    assert "tok_abc123" not in str(printed)


@pytest.mark.parametrize(
    ("environ", "starts"),
    [
        ({"BRIDGE_SERVER__HOST": "127.0.0.1"}, True),  # loopback without tokens: the sidecar case
        ({"BRIDGE_SERVER__HOST": "::1"}, True),
        ({"BRIDGE_SERVER__HOST": "0.0.0.0"}, False),  # the network without tokens: refused
        ({"BRIDGE_SERVER__HOST": "0.0.0.0", "BRIDGE_AUTH__ALLOW_UNAUTHENTICATED": "true"}, True),
        ({"BRIDGE_SERVER__HOST": "0.0.0.0",
          "BRIDGE_AUTH__TOKENS": '[{"name": "acme", "token": "t"}]'}, True),
    ],
)  # fmt: skip
def test_api_is_only_open_on_loopback(environ: dict[str, str], starts: bool) -> None:
    """Without tokens the API may only listen on loopback, unless explicitly allowed."""
    if starts:
        config.load(DEFAULT_FILE, environ=environ)
        return
    with pytest.raises(ConfigError, match=r"no auth\.tokens are configured"):
        config.load(DEFAULT_FILE, environ=environ)


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ('[{"name": "a"}]', "exactly one of sha256"),  # neither form
        ('[{"name": "a", "token": "x", "sha256": "' + "0" * 64 + '"}]', "exactly one of sha256"),
        ('[{"name": "a", "sha256": "xyz"}]', "should match pattern"),  # not a hex digest
        ('[{"name": "a", "token": "x"}, {"name": "a", "token": "y"}]', "repeated: a"),
        # One token under two names: which role would it have?
        ('[{"name": "a", "token": "x"}, {"name": "b", "tenant": "a", "role": "viewer", '
         '"token": "x"}]', "tokens 'a' and 'b' are the same token"),
        # A viewer of a tenant no full token has (a typo, or its tenant left out).
        ('[{"name": "a", "token": "x"}, {"name": "a-support", "role": "viewer", "token": "y"}]',
         "viewer token 'a-support' would see tenant 'a-support', which no token with role full"),
        ('[{"name": "a", "token": "x"}, {"name": "v", "tenant": "b", "role": "viewer", '
         '"token": "y"}]', "would see tenant 'b'"),
        ('[{"name": "a", "token": "x", "role": "admin"}]', "Input should be 'full' or 'viewer'"),
        ('[{"name": "a", "tenant": "a b", "token": "x"}]', "tenant.*should match pattern"),
    ],
)  # fmt: skip
def test_bad_tokens(tokens: str, message: str) -> None:
    """Token entries are checked at start-up, each error naming what to fix."""
    with pytest.raises(ConfigError, match=message):
        config.load(DEFAULT_FILE, environ={"BRIDGE_AUTH__TOKENS": tokens})


def test_viewer_tokens_reach_their_tenant_read_only() -> None:
    """A token's tenant is its name unless given; role full is the default; a viewer of a
    tenant that has a full token loads."""
    settings = config.load(
        DEFAULT_FILE,
        environ={
            "BRIDGE_AUTH__TOKENS": '[{"name": "acme", "token": "x"}, '
            '{"name": "acme-support", "tenant": "acme", "role": "viewer", "token": "y"}]'
        },
    )
    found = [(t.name, t.tenant_name, t.read_only) for t in settings.auth.tokens]
    assert found == [("acme", "acme", False), ("acme-support", "acme", True)]


def test_tokens_are_masked() -> None:
    """check-config never shows a plain token."""
    settings = config.load(
        DEFAULT_FILE, environ={"BRIDGE_AUTH__TOKENS": '[{"name": "a", "token": "t0k3n-value"}]'}
    )
    assert "t0k3n-value" not in str(config.masked(settings))


NEW_SECRET = "whsec_bmV3LXNlY3JldC1mb3Itcm90YXRpb24tdGVzdHMh"
OLD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_signing_secrets_in_rotation() -> None:
    """Unexpired signing secrets sign, current first; an expired one drops out on time."""
    settings = config.load(
        DEFAULT_FILE,
        environ={
            "BRIDGE_DELIVERY__SIGNING_SECRETS": (
                f'[{{"secret": "{NEW_SECRET}"}},'
                f' {{"secret": "{OLD_SECRET}", "expires_at": "2026-01-01T00:00:00Z"}}]'
            )
        },
    )
    expiry = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    assert settings.delivery.signing_secrets_at(expiry - 1) == [NEW_SECRET, OLD_SECRET]
    assert settings.delivery.signing_secrets_at(expiry) == [NEW_SECRET]
    assert NEW_SECRET not in str(config.masked(settings))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (f'[{{"secret": "{OLD_SECRET}", "expires_at": "2026-01-01T00:00:00Z"}}]',
         "the first signing secret is the current one"),
        ('[{"secret": "nope"}]', "must start with whsec_"),
        (f'[{{"secret": "{OLD_SECRET}", "expires_at": "2026-01-01T00:00:00"}}]',
         "timezone"),  # an expiry without a time zone is ambiguous
    ],
)  # fmt: skip
def test_bad_signing_secrets(value: str, message: str) -> None:
    """Signing secrets are checked at start-up."""
    with pytest.raises(ConfigError, match=message):
        config.load(DEFAULT_FILE, environ={"BRIDGE_DELIVERY__SIGNING_SECRETS": value})


def _number_keys(model: type[BaseModel]) -> list[str]:
    """The keys of `model` that take a number, as its JSON Schema says."""
    keys = []
    for key, schema in model.model_json_schema()["properties"].items():
        types = {choice.get("type") for choice in [schema, *schema.get("anyOf", [])]}
        if types & {"number", "integer"}:
            keys.append(key)
    return keys


# Each table of the file: what comes before one of its keys, and the settings model of its keys.
_STUDIO = '[upstreams.studio]\nbase_url = "https://studio.example"\n'
_TABLES: list[tuple[str, str, type[BaseModel]]] = [
    *(
        (section, f"[{section}]\n", model)
        for section, field in config.Settings.model_fields.items()
        if isinstance(model := field.annotation, type) and issubclass(model, BaseModel)
    ),
    ("upstreams.studio", _STUDIO, config.NamedUpstreamSettings),
    ("upstreams.studio.poll", f"{_STUDIO}[upstreams.studio.poll]\n", config.PollSettings),
]
_NUMBERS = [(table, head, key) for table, head, model in _TABLES for key in _number_keys(model)]


@pytest.mark.parametrize(("table", "head", "key"), _NUMBERS)
def test_a_boolean_is_not_read_as_a_number(tmp_path: Path, table: str, head: str, key: str) -> None:
    """`timeout_s = true` stops start-up naming the key (and its upstream): pydantic's lax mode
    would read it as 1, and the bridge would run with 1 s."""
    path = tmp_path / "bridge.toml"
    path.write_text(f"{head}{key} = true\n")
    with pytest.raises(ConfigError) as raised:
        config.load(path, environ={})
    assert str(raised.value) == f"{table}.{key} (from {path}): true is not a number"


def test_every_kind_of_number_setting_is_covered() -> None:
    """The table above reaches the numbers of the upstreams, their poll tables and the rest."""
    assert ("upstreams.studio", "request_timeout_s") in {(t, k) for t, _, k in _NUMBERS}
    assert ("upstreams.studio.poll", "timeout_s") in {(t, k) for t, _, k in _NUMBERS}
    assert {"port", "health_port"} <= {k for t, _, k in _NUMBERS if t == "server"}


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite:///bridge.db", "sqlite:///bridge.db"),
        ("sqlite:////tmp/a dir/b.db", "sqlite:////tmp/a dir/b.db"),
        ("postgresql://bridge:pw@db/bridge", "postgresql://bridge:********@db/bridge"),
        # libpq reads a password from the query as well
        ("postgresql://db/b?user=u&password=pw", "postgresql://db/b?user=u&password=********"),
        ("https://key@up.example/api", "https://********@up.example/api"),
    ],
)
def test_a_url_is_shown_with_its_passwords_masked(url: str, shown: str) -> None:
    """A URL as logs and `check-config` show it: a plain string (a console log line quotes it
    as such), every password masked."""
    masked = config.mask_url_password(config.StoreUrl(url))
    assert (type(masked), masked) == (str, shown)
