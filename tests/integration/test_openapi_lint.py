"""/openapi.json passes Spectral's OpenAPI ruleset (tests/spectral/ruleset.yaml) without a
single finding, warnings and hints included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service import config
from service.api import openapi
from tests import npm

LINTER = Path(__file__).parents[1] / "spectral"
WHY = "Spectral (npm) lints /openapi.json; it needs Node.js 18+ and npm"
LINT_TIMEOUT_S = 120
SETTINGS = config.load(environ={"BRIDGE_STORE__URL": "memory://"})


def _findings(document: Path) -> list[str]:
    """Spectral's findings on `document`, one line each."""
    npm.install(LINTER, WHY)
    spectral = str(LINTER / "node_modules" / ".bin" / "spectral")
    argv = [spectral, "lint", str(document), "--ruleset", str(LINTER / "ruleset.yaml"),
            "--format", "json", "--fail-severity", "hint", "--quiet"]  # fmt: skip
    done = npm.run(argv, LINTER, LINT_TIMEOUT_S)
    if done.returncode not in (0, 1):  # 1: findings
        pytest.fail(f"spectral exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    found = json.loads(done.stdout or "[]")
    return [f"{item['code']} at {'.'.join(map(str, item['path']))}: {item['message']}"
            for item in found]  # fmt: skip


def test_the_document_passes_spectral(tmp_path: Path) -> None:
    """The document a bridge serves has no Spectral finding."""
    document = tmp_path / "openapi.json"
    document.write_text(json.dumps(openapi.spec(SETTINGS)))
    assert _findings(document) == []


def test_spectral_finds_what_is_missing(tmp_path: Path) -> None:
    """The check can fail: an operation without operationId, tags or description is reported."""
    spec = openapi.spec(SETTINGS)
    for key in ("operationId", "tags", "description"):
        del spec["paths"]["/v1/me"]["get"][key]
    document = tmp_path / "openapi.json"
    document.write_text(json.dumps(spec))
    found = _findings(document)
    for rule in ("operation-operationId", "operation-tags", "operation-description"):
        assert any(line.startswith(f"{rule} at paths./v1/me.get") for line in found), found
