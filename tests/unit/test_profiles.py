"""Upstream profiles: declared in TOML, checked at start-up, and read as they say."""

from __future__ import annotations

import tomllib
from pathlib import Path

import httpx
import jmespath
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jmespath.exceptions import JMESPathError

from service import config, profiles
from service.answers import read_answer, read_creation
from service.errors import ConfigError
from service.profile import Profile, Reader, Unreadable, compiled, search
from service.upstream import UpstreamClient

# An API declared entirely in TOML: its words, its shapes, its key in a header of its own.
ACME = """
[upstreams.acme]
base_url = "https://api.acme.example/base"

[upstreams.acme.profile.status]
path = "/v2/tasks/{job_id}"
headers = { "X-Api-Version" = "7" }

[upstreams.acme.profile.auth]
scheme = "header"
name = "x-acme-key"

[upstreams.acme.profile.read]
status = "task.state"
queue_position = "task.queue.position"
progress = "task.percent"
progress_scale = 100
eta_s = "task.eta"
error = "task.failure.message"
outputs = "task.artifacts[].href"

[upstreams.acme.profile.statuses]
WAITING = "queued"
THROTTLED = "queued"
WORKING = "processing"
DONE = "succeeded"
FAILED = "failed"
CANCELLED = "failed"
GONE = "not_found"
"""


# A result table declared before the statuses table, which ends ACME.
STATUSES = "[upstreams.acme.profile.statuses]"
RESULT = '[upstreams.acme.profile.result]\npath = "/r/{job_id}"\n'


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> config.Settings:
    path = tmp_path / "bridge.toml"
    path.write_text(text)
    return config.load(path, environ or {})


@pytest.fixture
def acme(tmp_path: Path) -> Reader:
    return load(tmp_path, ACME).upstreams["acme"].reader()


def test_every_built_in_profile_loads_and_can_end_a_job() -> None:
    """Each maps a word to succeeded (a failure may show in its result request alone)."""
    assert profiles.DEFAULT in profiles.names()
    for name in profiles.names():
        assert "succeeded" in profiles.builtin(name).statuses.values(), name


def test_an_upstream_can_be_configured_by_variables_alone(tmp_path: Path) -> None:
    """A profile variable holds a built-in's name as it is, or a table as JSON; a bad one is
    blamed on its variable."""
    named = {
        "BRIDGE_UPSTREAMS__MINE__BASE_URL": "https://a.example",
        "BRIDGE_UPSTREAMS__MINE__PROFILE": "betterwaifu",
    }
    settings = load(tmp_path, "", named)
    assert settings.upstreams["mine"].profile == profiles.builtin("betterwaifu")
    table = '{"status": {"path": "/t/{job_id}"}, "statuses": {"OK": "succeeded"}}'
    settings = load(tmp_path, "", named | {"BRIDGE_UPSTREAMS__MINE__PROFILE": table})
    assert settings.upstreams["mine"].profile.status.path == "/t/{job_id}"
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, "", named | {"BRIDGE_UPSTREAMS__MINE__PROFILE": '{"statuses": {"A": 1}}'})
    assert str(raised.value).startswith(
        "upstreams.mine.profile.statuses.A (from BRIDGE_UPSTREAMS__MINE__PROFILE):"
    )


def test_the_default_upstream_is_betterwaifu_exactly(tmp_path: Path) -> None:
    """Without a word of it in the settings, `[upstream]` reads answers as the bridge always
    did: the profile of the default reader."""
    settings = load(tmp_path, "")
    assert settings.upstream_names == ("default",)
    assert settings.upstream.profile == profiles.builtin("betterwaifu")


@pytest.mark.parametrize(
    ("answer", "kind", "status"),
    [
        ({"task": {"state": "WAITING", "queue": {"position": 4}}}, "progress", "queued"),
        ({"task": {"state": "THROTTLED"}}, "progress", "queued"),
        ({"task": {"state": "WORKING", "percent": 40}}, "progress", "processing"),
        ({"task": {"state": "DONE"}}, "terminal", "succeeded"),
        ({"task": {"state": "CANCELLED"}}, "terminal", "failed"),
    ],
)
def test_several_words_map_onto_one_status(
    acme: Reader, answer: dict[str, object], kind: str, status: str
) -> None:
    seen = read_answer(200, {}, orjson.dumps(answer), reader=acme)
    assert (seen.kind, seen.job_status) == (kind, status)


def test_a_profile_reads_position_progress_eta_outputs_and_error(acme: Reader) -> None:
    queued = read_answer(
        200, {}, b'{"task": {"state": "WAITING", "queue": {"position": 4}}}', reader=acme
    )
    assert queued.queue_position == 4
    working = read_answer(
        200, {}, b'{"task": {"state": "WORKING", "percent": 40, "eta": 12.5}}', reader=acme
    )
    assert (working.progress, working.eta_s) == (0.4, 12.5)
    done = orjson.dumps(
        {"task": {"state": "DONE", "artifacts": [{"href": "https://cdn.acme/v.mp4"}, {"x": 1}]}}
    )
    assert read_answer(200, {}, done, reader=acme).outputs == ("https://cdn.acme/v.mp4",)
    failed = b'{"task": {"state": "FAILED", "failure": {"message": "NSFW prompt"}}}'
    assert read_answer(200, {}, failed, reader=acme).message == "NSFW prompt"


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ({"task": {"state": "EXPLODED"}}, "upstream answered an unknown status 'EXPLODED'"),
        ({"task": {}}, "upstream answered no status"),
        ({"state": "DONE"}, "upstream answered no status"),
        ({"task": {"state": 3}}, "upstream answered a status of type int: 3"),
        ({"task": {"state": ["DONE"]}}, 'upstream answered a status of type list: ["DONE"]'),
    ],
)
def test_an_answer_the_profile_cannot_read_is_transient_and_says_why(
    acme: Reader, answer: dict[str, object], error: str
) -> None:
    seen = read_answer(200, {}, orjson.dumps(answer), reader=acme)
    assert (seen.kind, seen.error) == ("transient", error)


def test_out_of_range_progress_and_eta_are_ignored(acme: Reader) -> None:
    seen = read_answer(
        200, {}, b'{"task": {"state": "WORKING", "percent": 140, "eta": -3}}', reader=acme
    )
    assert (seen.kind, seen.progress, seen.eta_s) == ("progress", None, None)


def test_a_reading_too_large_for_a_float_is_ignored(tmp_path: Path) -> None:
    """A string of digits made a number is an integer of any size, which no float holds: out
    of range like any other, not a crashed poll."""
    text = ACME.replace('"task.percent"', '"to_number(task.percent)"')
    text = text.replace('"task.eta"', '"to_number(task.eta)"')
    reader = load(tmp_path, text).upstreams["acme"].reader()
    huge = "9" * 400
    answer = orjson.dumps({"task": {"state": "WORKING", "percent": huge, "eta": huge}})
    seen = read_answer(200, {}, answer, reader=reader)
    assert (seen.kind, seen.progress, seen.eta_s) == ("progress", None, None)


def test_a_word_for_no_such_job_reads_as_a_404(acme: Reader) -> None:
    seen = read_answer(200, {}, b'{"task": {"state": "GONE"}}', reader=acme)
    assert (seen.kind, seen.error_code) == ("refused", "not_found")
    assert "'GONE'" in (seen.error or "")


async def test_requests_follow_the_profile(tmp_path: Path) -> None:
    """Path template, extra headers and the key where the profile puts it, for each scheme."""
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"task": {"state": "WORKING"}})

    schemes = {
        "bearer": ("authorization", "Bearer k1"),
        "key": ("authorization", "Key k1"),
        "header": ("x-acme-key", "k1"),
    }
    for scheme, (header, value) in schemes.items():
        text = ACME.replace('scheme = "header"', f'scheme = "{scheme}"')
        reader = load(tmp_path, text).upstreams["acme"].reader()
        async with httpx.MockTransport(handler) as transport:
            client = UpstreamClient(transport, "https://api.acme.example/base", 5, reader=reader)
            assert (await client.fetch("t:1", "k1")).job_status == "processing"
        request = sent.pop()
        assert request.url.raw_path == b"/base/v2/tasks/t%3A1"
        assert (request.headers[header], request.headers["x-api-version"]) == (value, "7")

    text = ACME.replace('scheme = "header"', 'scheme = "query"').replace(
        '/v2/tasks/{job_id}"', '/v2/get?id={job_id}"'
    )
    reader = load(tmp_path, text).upstreams["acme"].reader()
    async with httpx.MockTransport(handler) as transport:
        client = UpstreamClient(transport, "https://api.acme.example/base", 5, reader=reader)
        await client.fetch("t1", "k1")
    request = sent.pop()
    assert (request.url.path, dict(request.url.params)) == (
        "/base/v2/get",
        {"id": "t1", "x-acme-key": "k1"},
    )
    assert "authorization" not in request.headers


def test_the_key_comes_before_the_profiles_headers(tmp_path: Path) -> None:
    """The key's header is sent before the profile's own, as it always was: a server that
    reads the first of two `Authorization` fields (one declared by the profile) sees the key."""
    text = ACME.replace('scheme = "header"', 'scheme = "bearer"').replace(
        '{ "X-Api-Version" = "7" }', '{ "X-Api-Version" = "7", Authorization = "Basic zzz" }'
    )
    reader = load(tmp_path, text).upstreams["acme"].reader()
    unused = httpx.MockTransport(lambda _: httpx.Response(500))
    request = UpstreamClient(unused, "https://a.example", 5, reader=reader).request("t1", "k1")
    assert [name.lower() for name, _ in request.headers.raw] == [
        b"host", b"accept-encoding", b"user-agent", b"authorization", b"x-api-version",
        b"authorization",
    ]  # fmt: skip
    assert request.headers.get_list("authorization") == ["Bearer k1", "Basic zzz"]


async def test_the_create_requests_own_headers_replace_the_profiles_whatever_their_case(
    tmp_path: Path,
) -> None:
    """A profile declaring `content-type` does not send it beside the create request's JSON
    `Content-Type`: one field, the create's."""
    text = ACME.replace(
        '{ "X-Api-Version" = "7" }', '{ "X-Api-Version" = "7", content-type = "text/plain" }'
    ).replace(STATUSES, '[upstreams.acme.profile.create]\npath = "/v2/tasks"\n\n' + STATUSES)
    reader = load(tmp_path, text).upstreams["acme"].reader()
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(201, json={"id": "t1"})

    async with httpx.MockTransport(handler) as transport:
        client = UpstreamClient(transport, "https://a.example", 5, reader=reader)
        assert (await client.create(b"{}", "k1", None)).job_id == "t1"
    assert sent[0].headers.get_list("content-type") == ["application/json"]
    assert sent[0].headers["x-api-version"] == "7"


async def test_a_result_request_follows_a_success(tmp_path: Path) -> None:
    """The status says the job ended; the result request's answer is what is delivered."""
    text = ACME + (
        '[upstreams.acme.profile.result]\npath = "/v2/tasks/{job_id}/result"\n'
        'outputs = "files[].url"\n'
    )
    reader = load(tmp_path, text).upstreams["acme"].reader()
    result = {"files": [{"url": "https://cdn.acme/a.png"}]}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/result"):
            return httpx.Response(200, json=result)
        return httpx.Response(200, json={"task": {"state": "DONE"}})

    async with httpx.MockTransport(handler) as transport:
        seen = await UpstreamClient(transport, "https://a.example", 5, reader=reader).fetch(
            "t1", None
        )
    assert (seen.kind, seen.job_status, seen.document) == ("terminal", "succeeded", result)
    assert seen.outputs == ("https://cdn.acme/a.png",)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('WORKING = "processing"', 'WORKING = "running"'),
         "upstreams.acme.profile.statuses.WORKING (from {path}): Input should be 'queued', "
         "'processing', 'succeeded', 'failed' or 'not_found'"),
        (('status = "task.state"', 'status = "task.[state"'),
         "upstreams.acme.profile.read.status (from {path}): 'task.[state' is not a JMESPath "
         "expression"),
        (('path = "/v2/tasks/{job_id}"', 'path = "/v2/tasks/{id}"'),
         "upstreams.acme.profile.status.path (from {path}): '/v2/tasks/{id}' has no {job_id}"),
        (('scheme = "header"', 'scheme = "basic"'),
         "upstreams.acme.profile.auth.scheme (from {path}): Input should be 'bearer', 'key', "
         "'header', 'query' or 'none'"),
        (('name = "x-acme-key"', ""),
         "upstreams.acme.profile.auth (from {path}): auth scheme 'header' needs a name"),
        (('base_url = "https://api.acme.example/base"',
          'base_url = "https://api.acme.example/base"\nprofile = "acme"'),
         "upstreams.acme.profile (from {path}): no built-in profile is named 'acme'"),
        ((STATUSES, f'{RESULT}error = "detail"\nfailed = [503, 422]\n{STATUSES}'),
         "upstreams.acme.profile.result.failed (from {path}): 422 is not a 5xx: a 4xx other "
         "than 429 already ends the job failed"),
        ((STATUSES, f"{RESULT}failed = [504]\n{STATUSES}"),
         "upstreams.acme.profile.result (from {path}): failed statuses need an error path"),
        # Sent with every request, it would fail each one (a header must be one line).
        (('"X-Api-Version" = "7"', '"X-Api-Version" = "7\\r\\nX-Other: 1"'),
         "upstreams.acme.profile.status (from {path}): the value of 'X-Api-Version' must be "
         "one line of printable ASCII characters"),
    ],
)  # fmt: skip
def test_an_invalid_profile_stops_start_up_with_one_line(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    text = ACME.replace(*change)
    if "profile = " in change[1]:  # a name instead of the tables
        text = text.split("[upstreams.acme.profile.status]")[0]
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text)
    line = str(raised.value)
    assert "\n" not in line
    assert message.replace("{path}", str(tmp_path / "bridge.toml")) in line


@pytest.mark.parametrize(
    "variable",
    ["BRIDGE_UPSTREAMS__ACME__PROFILE__STATUSES__DONE", "BRIDGE_UPSTREAM__PROFILE__STATUSES__Done"],
)
def test_a_status_word_a_variables_name_would_lower_case_stops_start_up(
    tmp_path: Path, variable: str
) -> None:
    """Variable names are read in lower case, and status words are matched as spelt: `DONE`
    would silently be `done`, and no job would ever end."""
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, ACME, {variable: "succeeded"})
    line = str(raised.value)
    assert line.startswith(f"{variable}: ")
    statuses, _, word = variable.rpartition("__")
    assert line.endswith(f'in JSON: {statuses}=\'{{"{word}": "..."}}\'')
    load(tmp_path, ACME, {variable.removesuffix(word) + word.lower(): "succeeded"})  # as read


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (("progress_scale = 100", "progress_scale = true"), "read.progress_scale"),
        ((STATUSES, f"[upstreams.acme.profile.http]\nok = [200, true]\n{STATUSES}"), "http.ok"),
        ((STATUSES, f'{RESULT}error = "e"\nfailed = [true]\n{STATUSES}'), "result.failed"),
    ],
)
def test_a_boolean_where_a_profile_takes_a_number_stops_start_up(
    tmp_path: Path, change: tuple[str, str], key: str
) -> None:
    """`progress_scale = true` is not 1, nor `ok = [true]` the status 1: each names its key."""
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, ACME.replace(*change))
    assert str(raised.value) == (
        f"upstreams.acme.profile.{key} (from {tmp_path / 'bridge.toml'}): true is not a number"
    )


def test_upstream_names_and_the_default_name_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'Acme' cannot name an upstream"):
        load(tmp_path, '[upstreams.Acme]\nbase_url = "https://a.example"\n')
    with pytest.raises(ConfigError, match=r"'default' is the \[upstream\] section"):
        load(tmp_path, '[upstreams.default]\nbase_url = "https://a.example"\n')
    with pytest.raises(ConfigError, match=r"upstreams\.acme\.base_url .*Field required"):
        load(tmp_path, "[upstreams.acme]\nprofile = 'betterwaifu'\n")


@pytest.mark.parametrize("name", ["my__api", "mine_"])
def test_a_name_no_variable_can_spell_stops_start_up(tmp_path: Path, name: str) -> None:
    """`__` separates a variable's parts: BRIDGE_UPSTREAMS__MY__API__API_KEY (what the Helm
    chart makes of the key of `my__api`) would name upstream `my`, and so would the key of
    `mine_`; such a name is refused where it is declared, not blamed on another."""
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, f'[upstreams.{name}]\nbase_url = "https://a.example"\n')
    assert f"{name!r} cannot name an upstream" in str(raised.value)
    assert (
        "my_api" in load(tmp_path, '[upstreams.my_api]\nbase_url = "https://a.example"\n').upstreams
    )


@pytest.mark.parametrize(
    ("section", "base_url"),
    [
        ("upstreams.azure", "https://x.example/openai?api-version=2025-04-01"),
        ("upstream", "https://x.example/#v1"),
    ],
)
def test_a_base_url_with_a_query_stops_start_up(
    tmp_path: Path, section: str, base_url: str
) -> None:
    """Paths are appended to the base URL: after its query (or fragment) every request would
    reach the base's own path, and each job would end `not_found`. A query goes in the
    profile's path template."""
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, f'[{section}]\nbase_url = "{base_url}"\n')
    line = str(raised.value)
    assert line.startswith(f"{section}.base_url (from ")
    assert "path template" in line


def test_a_named_upstream_polls_by_poll_changed_by_its_own_table(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        "[poll]\ninterval_s = 4.0\ntimeout_s = 600\n"
        '[upstreams.slow]\nbase_url = "https://a.example"\n'
        "[upstreams.slow.poll]\ninterval_s = 10.0\n",
        {"BRIDGE_UPSTREAMS__SLOW__API_KEY": "sk_1", "BRIDGE_POLL__MIN_INTERVAL_S": "3"},
    )
    limits, poll = settings.upstream_named("slow")
    assert (poll.interval_s, poll.timeout_s, poll.min_interval_s) == (10.0, 600.0, 3.0)
    assert settings.upstream_named("default")[1] == settings.poll
    assert limits.api_key is not None
    assert limits.api_key.get_secret_value() == "sk_1"
    assert config.masked(settings)["upstreams"]["slow"]["api_key"] == "**********"


def test_the_format_of_the_built_in_files_is_the_settings_format() -> None:
    """A built-in profile is a TOML file an operator could paste into a profile table."""
    for name in profiles.names():
        text = (Path(profiles.__file__).parent / f"{name}.toml").read_text()
        assert Profile.model_validate(tomllib.loads(text)) == profiles.builtin(name)


def test_an_expression_that_fails_on_an_answer_is_a_transient_error(tmp_path: Path) -> None:
    """JMESPath functions raise on values of another type: the answer is unreadable, said so,
    and polling goes on (never a crash); a creation answer so read fails cleanly."""
    text = ACME.replace(
        'queue_position = "task.queue.position"', 'queue_position = "length(task.n)"'
    )
    text += '[upstreams.acme.profile.create]\npath = "/v2/tasks"\njob_id = "to_string(max(ids))"\n'
    reader = load(tmp_path, text).upstreams["acme"].reader()
    seen = read_answer(200, {}, b'{"task": {"state": "WAITING", "n": 7}}', reader=reader)
    assert seen.kind == "transient"
    assert (seen.error or "").startswith(
        "upstream answered what its profile cannot read: 'length(task.n)' failed on it"
    )
    created = read_creation(200, {}, b'{"ids": ["a", 1]}', reader=reader)
    assert created.kind == "failed"
    assert "'to_string(max(ids))' failed on it" in (created.error or "")


def test_an_expression_that_overflows_on_an_answer_is_a_transient_error(tmp_path: Path) -> None:
    """`ceil` and `floor` of an infinite number (a string "1e400" made a number) raise
    OverflowError, not JMESPath's errors: the answer is unreadable all the same."""
    text = ACME.replace('progress = "task.percent"', 'progress = "ceil(to_number(task.percent))"')
    reader = load(tmp_path, text).upstreams["acme"].reader()
    seen = read_answer(
        200, {}, b'{"task": {"state": "WORKING", "percent": "1e400"}}', reader=reader
    )
    assert seen.kind == "transient"
    assert (seen.error or "").startswith(
        "upstream answered what its profile cannot read: 'ceil(to_number(task.percent))' failed"
    )


def test_a_failed_jobs_own_words_reach_the_webhook_whole(acme: Reader) -> None:
    words = "the model refused: " + "x" * 500
    failed = orjson.dumps({"task": {"state": "FAILED", "failure": {"message": words}}})
    assert read_answer(200, {}, failed, reader=acme).message == words


async def test_the_result_requests_refusals_are_read_as_the_status_requests(
    tmp_path: Path,
) -> None:
    """A refused key at the result request says only that, for the bridge's own key; another
    4xx fails the job with the upstream's words and no body of its own."""
    text = ACME + '[upstreams.acme.profile.result]\npath = "/r/{job_id}"\nerror = "detail"\n'
    reader = load(tmp_path, text).upstreams["acme"].reader()
    answers = {"401": (401, {"detail": "key ak_own is revoked"}), "422": (422, {"detail": "NSFW"})}

    def handler(request: httpx.Request) -> httpx.Response:
        job_id = request.url.path.rsplit("/", 1)[-1]
        if request.url.path.startswith("/r/"):
            status, body = answers[job_id]
            return httpx.Response(status, json=body)
        return httpx.Response(200, json={"task": {"state": "DONE"}})

    async with httpx.MockTransport(handler) as transport:
        client = UpstreamClient(
            transport, "https://a.example", 5, bridge_key="ak_own", reader=reader
        )
        refused = await client.fetch("401", "ak_own")
        failed = await client.fetch("422", None)
    assert (refused.kind, refused.error_code, refused.error) == (
        "refused",
        "unauthorized",
        "the upstream refused the bridge's key (401)",
    )
    assert (failed.kind, failed.job_status, failed.message, failed.body) == (
        "terminal",
        "failed",
        "NSFW",
        None,
    )


async def test_a_key_sent_in_the_query_is_masked_as_the_url_spells_it(tmp_path: Path) -> None:
    text = ACME.replace('scheme = "header"', 'scheme = "query"')
    reader = load(tmp_path, text).upstreams["acme"].reader()
    key = "ab+c/d=e f"

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}")

    async with httpx.MockTransport(handler) as transport:
        seen = await UpstreamClient(transport, "https://a.example", 5, reader=reader).fetch(
            "t1", key
        )
    assert seen.kind == "transient"
    assert "x-acme-key=********" in (seen.error or "")


@pytest.mark.parametrize(
    ("status", "body", "kind", "message"),
    [
        # A failed status whose body says why: the job failed, in the upstream's words.
        (504, {"detail": "Request timed out", "error_type": "request_timeout"}, "terminal",
         "Request timed out"),
        (503, {"detail": "Runner disconnected"}, "terminal", "Runner disconnected"),
        # The same status without the upstream's words (a gateway's own page): asked again.
        (503, b"<html>Service Unavailable</html>", "transient", None),
        (504, {"message": "upstream timeout"}, "transient", None),
        # A 5xx the profile does not name: asked again, as ever.
        (500, {"detail": "Internal error"}, "transient", None),
    ],
)  # fmt: skip
async def test_the_result_requests_failed_statuses_end_the_job_with_its_words(
    tmp_path: Path, status: int, body: dict[str, str] | bytes, kind: str, message: str | None
) -> None:
    """A status of `result.failed` whose body has words at `result.error` ends the job failed
    with them at once; one without them, or a status not named, is transient."""
    text = ACME + (
        '[upstreams.acme.profile.result]\npath = "/r/{job_id}"\nerror = "detail"\n'
        "failed = [502, 503, 504]\n"
    )
    reader = load(tmp_path, text).upstreams["acme"].reader()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/r/"):
            if isinstance(body, bytes):
                return httpx.Response(status, content=body)
            return httpx.Response(status, json=body)
        return httpx.Response(200, json={"task": {"state": "DONE"}})

    async with httpx.MockTransport(handler) as transport:
        seen = await UpstreamClient(transport, "https://a.example", 5, reader=reader).fetch(
            "t1", None
        )
    assert (seen.kind, seen.message, seen.http_status) == (kind, message, status)
    if kind == "terminal":
        assert (seen.job_status, seen.body) == ("failed", None)
    else:
        assert seen.error == f"upstream answered the result request with HTTP {status}"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from(["a", "b", "", "2"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["status", "n", "items", "url"]), inner, max_size=4)
    ),
    max_leaves=20,
)
# Fields, projections, filters, and functions taking expressions (`&n`), which call back into
# the interpreter: what profiles write.
EXPRESSIONS = [
    "status", "items[0].url", "items[].url", "items[?n > `0`].url | [0]", "length(items)",
    "sort_by(items, &n)[-1].url", "max_by(items, &n).url", "to_string(n)", "status || n",
]  # fmt: skip


@given(st.lists(st.tuples(st.sampled_from(EXPRESSIONS), JSON_VALUES), min_size=1, max_size=10))
def test_searches_find_what_jmespath_finds(cases: list[tuple[str, object]]) -> None:
    """The profiles' searches, sharing one interpreter across calls, answer as jmespath's own
    search does, and fail (`Unreadable`) where it raises."""
    for expression, document in cases:
        try:
            expected: object = jmespath.search(expression, document)
        except (JMESPathError, TypeError, ValueError, ArithmeticError):
            expected = Unreadable
        try:
            found: object = search(compiled(expression), document)
        except Unreadable:
            found = Unreadable
        assert found == expected, (expression, document)
