"""Schemathesis against /openapi.json, in process: no 5xx, and every answer as documented.

The app runs in this process through Schemathesis's ASGI transport, which starts its lifespan
(the whole bridge: store, worker, scheduler) on first use; the fixture stops it. The
upstream is a closed loopback port, so polls fail quietly and no job ever ends.

The schema is the document /openapi.json serves, loaded at import so that `parametrize` makes
one test per operation (Schemathesis's lazy `from_fixture` loader does not run on pytest 9.2:
it sets `request.node._nodeid`, which pytest no longer has); the fixture checks the app serves
exactly this document.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import schemathesis
from schemathesis.python import asgi
from starlette.applications import Starlette

from service import config
from service.api import openapi
from service.app import create_app
from tests.integration.conftest import POSTGRES_URL, _admin_connection

pytestmark = [
    # The bridge runs in Schemathesis's event-loop thread and draws poll jitter from the global
    # `random` while Hypothesis generates a case in this one; Hypothesis takes the change of
    # random's state for a strategy using `random`. No strategy here does.
    pytest.mark.filterwarnings(
        "ignore:Do not use the `random` module inside strategies"
        ":hypothesis.errors.HypothesisDeprecationWarning"
    ),
]
TOKEN = "t"
# A public address: registrations pass the SSRF guard without a DNS lookup, and nothing is
# ever delivered there (no job ends while the upstream is a closed port).
PUBLIC_HOST = "93.184.215.14"
GOOD: dict[str, Any] = {"job_id": "job_1", "callback_url": f"https://{PUBLIC_HOST}/hook"}
CONFIG = schemathesis.Config.from_dict(
    {
        # Deterministic and bounded: a fixed seed, derandomized generation, no example
        # database, a fixed number of examples per operation, no stateful phase. The coverage
        # phase adds its boundary and negative cases, and undocumented methods (405).
        "seed": 20240601,
        "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
        "generation": {"max-examples": 25, "deterministic": True, "database": "none"},
        "phases": {"stateful": {"enabled": False}},
        "checks": {
            "enabled": False,
            "not_a_server_error": {"enabled": True},
            "status_code_conformance": {"enabled": True},
            "content_type_conformance": {"enabled": True},
            "response_headers_conformance": {"enabled": True},
            "response_schema_conformance": {"enabled": True},
            # Undocumented methods answer 405 with an `Allow` header naming every method the
            # path has (checked on OPTIONS).
            "unsupported_method": {"enabled": True},
            "allow_header_conformance": {"enabled": True},
        },
        "operations": [
            {
                # The upstream is a closed port: a valid generate call gets its documented 502
                # (any other 5xx is still a failure).
                "include-path": "/v1/generate",
                "checks": {
                    "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "502"]}
                },
            }
        ],
    }
)
# The settings of every run (the fixture adds the store and tokens, which the document does
# not show).
ENVIRON = {
    "BRIDGE_UPSTREAM__BASE_URL": "http://127.0.0.1:9",
    # A second upstream (as closed): requests name either, and the list is filtered by either.
    "BRIDGE_UPSTREAMS__SECOND__BASE_URL": "http://127.0.0.1:9",
    "BRIDGE_CONFIG": str(Path(__file__).parents[2] / "config" / "bridge.toml"),
    # Registrations get past the rate limit to validation and 201.
    "BRIDGE_AUTH__REGISTRATION_BURST": "100000",
    # No job ever ends: every long-poll of the registered watch waits this long.
    "BRIDGE_API__MAX_WAIT_S": "0.2",
    # Schemathesis addresses the app as `testserver`, which is not a loopback name.
    "BRIDGE_SERVER__ALLOWED_HOSTS": '["testserver"]',
}
# What /openapi.json serves (the fixture checks that it is this very document, but for the
# token it asks for).
schema = schemathesis.openapi.from_dict(
    openapi.spec(config.load(environ={**ENVIRON, "BRIDGE_STORE__URL": "memory://"})),
    config=CONFIG,
)
# The event stream of a watch whose job never ends is never complete, so no generated call of
# it could be checked; tests/e2e/test_wait_and_stream.py reads it from a real server.
generated = schema.exclude(path="/v1/watches/{watch_id}/events")


def _public(url: Any) -> Any:
    """A generated http(s) URL with its host replaced by a public IP literal.

    The SSRF guard would resolve host names (CI has no DNS to speak of) and refuse most
    generated IP literals ("0" is 0.0.0.0): registrations would rarely get past it to 201.
    The guard's own refusals are tested in test_api.py and the unit tests."""
    if not isinstance(url, str):
        return url
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return url  # the model refuses it
    if parts.scheme not in ("http", "https") or not host:
        return url
    userinfo, at, _ = parts.netloc.rpartition("@")
    netloc = f"{userinfo}{at}{PUBLIC_HOST}" + ("" if port is None else f":{port}")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class Run:
    app: Starlette
    headers: dict[str, str]
    watch_id: str  # a watch that exists


async def _admin(sql: str) -> None:
    connection = await _admin_connection()  # skips (or fails, in CI) without PostgreSQL
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@contextlib.contextmanager
def _postgres_database() -> Iterator[str]:
    """The URL of a fresh database on the test server, dropped afterwards."""
    name = f"test_{secrets.token_hex(6)}"
    asyncio.run(_admin(f"CREATE DATABASE {name}"))
    try:
        yield urlunsplit(urlsplit(POSTGRES_URL)._replace(path=f"/{name}"))
    finally:
        asyncio.run(_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("open", id="open"),
        pytest.param("token", id="token"),
        # PostgreSQL refuses some text SQLite keeps (NUL characters).
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ],
)
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """The app without tokens (as allowed on loopback) or with one, and a registered watch."""
    with contextlib.ExitStack() as stack:
        if request.param == "postgres":
            store_url = stack.enter_context(_postgres_database())
        else:
            store_url = f"sqlite:///{tmp_path_factory.mktemp('schemathesis')}/bridge.db"
        environ = {**ENVIRON, "BRIDGE_STORE__URL": store_url}
        headers = {}
        if request.param == "token":
            environ["BRIDGE_AUTH__TOKENS"] = f'[{{"name": "acme", "token": "{TOKEN}"}}]'
            # A small burst: registrations past it meet the 429 and its Retry-After.
            environ["BRIDGE_AUTH__REGISTRATION_BURST"] = "5"
            environ["BRIDGE_AUTH__REGISTRATIONS_PER_S"] = "0.01"
            # The negative cases' made-up tokens must not lock the positive ones out.
            environ["BRIDGE_AUTH__FAILED_AUTH_BURST"] = "10000"
            headers["Authorization"] = f"Bearer {TOKEN}"
        app = create_app(config.load(environ=environ))
        stack.callback(asgi.shutdown_lifespans)  # stops the bridge (before the database goes)
        served = schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG)
        # The very document tested, but for `security`: a token is asked for only with tokens.
        assert served.raw_schema == {**schema.raw_schema, "security": served.raw_schema["security"]}
        assert bool(served.raw_schema["security"]) == (request.param == "token")
        created = schema["/v1/watches"]["POST"].Case(body=GOOD).call(app=app, headers=headers)
        assert created.status_code == 201, created.text
        yield Run(app, headers, created.json()["id"])


@generated.parametrize()
def test_api_conforms_to_its_description(case: Any, run: Run) -> None:
    """No generated request gets a 5xx, and every answer matches /openapi.json."""
    for field in ("callback_url", "url"):  # of a watch, of a subscription
        if isinstance(case.body, dict) and field in case.body:
            case.body = {**case.body, field: _public(case.body[field])}
    watch_id = (case.path_parameters or {}).get("watch_id")
    # Half the well-formed ids (by length) name the registered watch: its answers are checked
    # too, not only the 404s of ids that name none.
    if isinstance(watch_id, str) and watch_id.startswith("wch_") and len(watch_id) % 2 == 0:
        case.path_parameters = {**case.path_parameters, "watch_id": run.watch_id}
    # Negative cases keep the credentials they were generated with (none, or made up): with a
    # token configured they meet the 401 and its WWW-Authenticate.
    headers = run.headers if case.meta.generation.mode.is_positive else {}
    case.call_and_validate(app=run.app, headers=headers)


def _nested(depth: int) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for _ in range(depth):
        document = {"a": document}
    return document


@pytest.mark.parametrize(
    ("path", "method", "parts", "status"),
    [
        # A NUL in an id: PostgreSQL refused the text (500); no such id can exist: 404.
        pytest.param(
            "/v1/watches/{watch_id}", "GET", {"path_parameters": {"watch_id": "wch_a\x00b"}}, 404,
            id="nul-in-watch-id",
        ),
        pytest.param(
            "/v1/watches/{watch_id}", "DELETE", {"path_parameters": {"watch_id": "x\x00"}}, 404,
            id="nul-in-watch-id-delete",
        ),
        # ... and in the list filters: 422 naming them.
        pytest.param(
            "/v1/watches", "GET", {"query": {"job_id": "job\x00"}}, 422, id="nul-in-job-id-filter"
        ),
        pytest.param(
            "/v1/watches", "GET", {"query": {"cursor": "wch_\x00"}}, 422, id="nul-in-cursor"
        ),
        # "²" is a digit to str.isdigit but not to int(); 5,000 digits are past int()'s limit.
        pytest.param("/v1/watches", "GET", {"query": {"limit": "²"}}, 422, id="superscript-limit"),
        pytest.param(
            "/v1/watches", "GET", {"query": {"limit": "9" * 5000}}, 422, id="5000-digit-limit"
        ),
        # A NUL in a body string: PostgreSQL refused it (500); 422 naming the field.
        pytest.param(
            "/v1/watches", "POST", {"body": {**GOOD, "callback_url": f"https://{PUBLIC_HOST}/\x00"}},
            422, id="nul-in-callback-url",
        ),
        pytest.param(
            "/v1/watches", "POST", {"body": {**GOOD, "metadata": {"k\x00": 1}}}, 422,
            id="nul-in-metadata-key",
        ),
        # Metadata nested past orjson's 255 levels crashed the model's size check (500): 400.
        pytest.param(
            "/v1/watches", "POST", {"body": {**GOOD, "metadata": _nested(300)}}, 400,
            id="metadata-300-levels-deep",
        ),
    ],
)  # fmt: skip
def test_inputs_that_answered_500(
    run: Run, path: str, method: str, parts: dict[str, Any], status: int
) -> None:
    """Inputs the generated cases don't reach, each of which answered 500: now a documented 4xx."""
    case = schema[path][method].Case(**parts)
    response = case.call_and_validate(app=run.app, headers=run.headers)
    assert response.status_code == status, response.text


@pytest.mark.parametrize("run", ["open"], indirect=True)
def test_callback_host_with_an_overlong_label_is_refused(run: Run) -> None:
    """A host name no resolver accepts (a 64-character label) is a 422 naming callback_url."""
    body = {**GOOD, "callback_url": f"https://{'a' * 64}.example/hook"}
    case = schema["/v1/watches"]["POST"].Case(body=body)
    response = case.call_and_validate(app=run.app, headers=run.headers)
    assert response.status_code == 422, response.text
