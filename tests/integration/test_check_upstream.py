"""`webhook-bridge check-upstream`: a real request to a real server, through a declared
profile, printed as sent and as read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web

from service import check_upstream, cli, config
from tests.loopback import loopback_server

PROFILE = """
[upstreams.acme]
base_url = "{base}"
api_key = "ak_secret_key"

[upstreams.acme.profile.status]
path = "/v2/tasks/{{job_id}}"

[upstreams.acme.profile.auth]
scheme = "header"
name = "x-acme-key"

[upstreams.acme.profile.read]
status = "state"
progress = "percent"
progress_scale = 100
outputs = "files[].href"
error = "failure"

[upstreams.acme.profile.statuses]
WORKING = "processing"
DONE = "succeeded"
FAILED = "failed"
"""

ANSWERS = {
    "t-working": {"state": "WORKING", "percent": 25},
    "t-done": {"state": "DONE", "files": [{"href": "https://cdn.acme.example/1.png"}]},
    "t-odd": {"state": "MELTED", "key": "ak_secret_key"},
    "t-failed": {"state": "FAILED", "failure": "ak_secret_key may not use this model"},
}


async def acme(request: web.Request) -> web.Response:
    if request.headers.get("x-acme-key") != "ak_secret_key":
        return web.json_response({"failure": "bad key"}, status=401)
    answer = ANSWERS.get(request.path.rsplit("/", 1)[-1])
    if answer is None:
        return web.json_response({"failure": "no such task"}, status=404)
    return web.json_response(answer)


def reading(printed: str) -> dict[str, object]:
    """The JSON the command printed after its last "How the bridge reads" line."""
    after = printed.rsplit("How the bridge reads the answer:\n", 1)[1]
    found: dict[str, object] = json.loads(after)
    return found


@pytest.mark.parametrize(
    ("job_id", "code", "read"),
    [
        ("t-working", 0, {"kind": "progress", "status": "processing", "progress": 0.25}),
        ("t-done", 0, {"kind": "terminal", "outputs": ["https://cdn.acme.example/1.png"]}),
        ("t-gone", 0, {"kind": "refused", "error_code": "not_found"}),
        ("t-failed", 0, {"kind": "terminal", "error": "******** may not use this model"}),
        (
            "t-odd",
            1,
            {"kind": "transient", "error": "upstream answered an unknown status 'MELTED'"},
        ),
    ],
)
async def test_prints_the_request_the_answer_and_the_reading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], job_id: str, code: int,
    read: dict[str, object],
) -> None:  # fmt: skip
    async with loopback_server(acme) as base:
        (tmp_path / "bridge.toml").write_text(PROFILE.format(base=base))
        settings = config.load(tmp_path / "bridge.toml", {})
        assert await check_upstream.check(settings, "acme", job_id, None) == code
    printed = capsys.readouterr().out
    assert printed.startswith(f"GET {base}/v2/tasks/{job_id}\n")
    assert "ak_secret_key" not in printed  # the key is masked wherever the answer quotes it
    assert reading(printed).items() >= read.items()


async def test_a_wrong_key_is_read_as_the_bridge_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with loopback_server(acme) as base:
        (tmp_path / "bridge.toml").write_text(PROFILE.format(base=base))
        settings = config.load(tmp_path / "bridge.toml", {})
        assert await check_upstream.check(settings, "acme", "t-done", "ak_wrong") == 0
    printed = capsys.readouterr().out
    assert "HTTP 401" in printed
    assert reading(printed)["error"] == "the upstream refused the API key (401): bad key"


def test_an_unknown_upstream_names_the_configured_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bridge.toml").write_text(PROFILE.format(base="https://acme.example"))
    config_file = str(tmp_path / "bridge.toml")
    assert cli.main(["check-upstream", "acmee", "t1", "--config", config_file]) == 2
    assert "no upstream is named 'acmee'; the configured ones are default, acme" in (
        capsys.readouterr().err
    )
