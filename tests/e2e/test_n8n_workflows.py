"""The n8n workflows (integrations/n8n) import cleanly, their requests work on a real bridge and
their signature checks accept the bridge's webhooks and nothing else.

The shape checks read the exported JSON the way n8n's importer does: nodes with the fields it
needs, unique names and ids, connections between nodes that exist. The end-to-end checks take
the HTTP Request node's URL and body straight from the workflow, render its n8n expressions
(with the Wait node's resume URL pointing at the receiver) and send them to the bridge, so the
workflow a user imports is the request that was tested. The "Verify signature" Code node's
JavaScript, taken from the workflow too, runs under node as n8n's task runner runs it
(`n8n_code_node.js`) on the webhooks the bridge really sent: accepted as sent, refused with an
altered body, another secret or an old timestamp. Real n8n (1.x and 2.x) runs both workflows in
`integrations/n8n/check_live.py`, by hand: installing n8n takes minutes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import API_KEY, ROOT, Bridge, Receiver, StartBridge, Upstream, unique
from tests.e2e.n8n_code import assert_verifies_only_what_the_bridge_signed, run_code, webhook_item
from tests.tools import require

WORKFLOWS = ROOT / "integrations" / "n8n"
RESUME = WORKFLOWS / "resume-url-workflow.json"
SUBSCRIPTION = WORKFLOWS / "subscription-workflow.json"
# The node types (and versions) the workflows use: all built into n8n 1.x and 2.x.
TYPE_VERSIONS = {
    "n8n-nodes-base.manualTrigger": 1,
    "n8n-nodes-base.set": 3.4,
    "n8n-nodes-base.httpRequest": 4.2,
    "n8n-nodes-base.wait": 1.1,
    "n8n-nodes-base.webhook": 2,
    "n8n-nodes-base.if": 2,
    "n8n-nodes-base.stopAndError": 1,
    "n8n-nodes-base.code": 2,
    "n8n-nodes-base.respondToWebhook": 1.1,
}
TRIGGERS = {"n8n-nodes-base.manualTrigger", "n8n-nodes-base.webhook"}
# Steers the simulator's job (the generate call passes `input` unchanged): done in a second.
FAST_JOB = {"queue_positions": 0, "processing_s": 0.3}
# What the two workflows' Code nodes share after their own lines, and the subscription's
# secret as shipped.
LIBRARY_MARKER = "// ---- Standard Webhooks verification"
SECRET_PLACEHOLDER = "paste-the-whsec_-secret-of-the-subscription-here"


# Rendering the few n8n expressions the workflows' requests use.

EXPRESSION = re.compile(r"\{\{\s*(.*?)\s*\}\}")
NODE_FIELD = re.compile(r"^\$\('(?P<node>[^']+)'\)\.item\.json\.(?P<field>\w+)$")
STRINGIFY = re.compile(r"^JSON\.stringify\((?P<inner>.+)\)$")


@dataclass
class Execution:
    """What n8n knows while running: the resume URL, the execution id, earlier nodes' output."""

    resume_url: str
    id: str = "4711"
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def value(self, expression: str) -> Any:
        if expression == "$execution.resumeUrl":
            return self.resume_url
        if expression == "$execution.id":
            return self.id
        match = NODE_FIELD.match(expression)
        if match:
            return self.nodes[match["node"]][match["field"]]
        raise AssertionError(f"an n8n expression this test cannot render: {expression}")

    def render(self, template: str) -> str:
        """An n8n parameter (`=` then text with `{{ expressions }}`) as n8n would send it."""
        assert template.startswith("="), f"not an expression parameter: {template!r}"

        def evaluate(match: re.Match[str]) -> str:
            expression = match.group(1)
            stringify = STRINGIFY.match(expression)
            if stringify:
                return json.dumps(self.value(stringify["inner"]))
            return str(self.value(expression))

        return EXPRESSION.sub(evaluate, template[1:])


def load(path: Path) -> dict[str, Any]:
    workflow: dict[str, Any] = json.loads(path.read_text())
    return workflow


def node(workflow: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [n for n in workflow["nodes"] if n["name"] == name]
    assert len(found) == 1, f"{len(found)} nodes named {name!r}"
    return found[0]


def settings(workflow: dict[str, Any], **overrides: str) -> dict[str, Any]:
    """The values of the workflow's Settings node, some replaced as a user would."""
    assignments = node(workflow, "Settings")["parameters"]["assignments"]["assignments"]
    values = {a["name"]: a["value"] for a in assignments}
    assert set(overrides) <= set(values), f"no such settings: {set(overrides) - set(values)}"
    return {**values, **overrides}


def request_of(workflow: dict[str, Any], name: str, execution: Execution) -> tuple[str, Any]:
    """The URL and JSON body the HTTP Request node `name` sends."""
    parameters = node(workflow, name)["parameters"]
    assert parameters["method"] == "POST"
    assert parameters["specifyBody"] == "json"
    url = execution.render(parameters["url"])
    return url, json.loads(execution.render(parameters["jsonBody"]))


@pytest.fixture(scope="session")
def node_binary() -> str:
    """node, to run the Code nodes' JavaScript; skipped without it, except in CI."""
    return require("node", "the n8n Code nodes' tests run their JavaScript in it")


def verification_code(workflow: dict[str, Any]) -> str:
    code: str = node(workflow, "Verify signature")["parameters"]["jsCode"]
    return code


# The shape n8n's importer needs.


@pytest.mark.parametrize("path", [RESUME, SUBSCRIPTION], ids=lambda p: p.name)
def test_workflow_is_an_importable_n8n_export(path: Path) -> None:
    """Every node is complete, names and ids are unique, connections join existing nodes."""
    workflow = load(path)
    assert workflow["name"]
    nodes = workflow["nodes"]
    names = [n["name"] for n in nodes]
    assert len(set(names)) == len(names), names
    assert len({n["id"] for n in nodes}) == len(nodes)
    for each in nodes:
        uuid.UUID(each["id"])
        assert isinstance(each["parameters"], dict), each["name"]
        assert TYPE_VERSIONS[each["type"]] == each["typeVersion"], each["name"]
        assert len(each["position"]) == 2
        assert all(isinstance(x, int) for x in each["position"])
    targets = set()
    for source, outputs in workflow["connections"].items():
        assert source in names
        for branch in outputs["main"]:
            for link in branch:
                assert link["node"] in names, link
                assert link["type"] == "main", link
                targets.add(link["node"])
    starts = {n["name"] for n in nodes if n["type"] in TRIGGERS}
    assert targets == set(names) - starts, "every node but the triggers has an input"


def test_resume_workflow_waits_for_an_authenticated_post() -> None:
    """The Wait node resumes on a POST to its resume URL, checked by header auth, keeps the raw
    body for the signature check and answers through the Respond to Webhook nodes."""
    wait = node(load(RESUME), "Wait for the image")
    assert wait["parameters"]["resume"] == "webhook"
    assert wait["parameters"]["httpMethod"] == "POST"
    assert wait["parameters"]["incomingAuthentication"] == "headerAuth"
    assert wait["parameters"]["responseMode"] == "responseNode"
    assert wait["parameters"]["options"]["rawBody"] is True
    assert "httpHeaderAuth" in wait["credentials"]
    uuid.UUID(wait["webhookId"])


@pytest.mark.parametrize("path", [RESUME, SUBSCRIPTION], ids=lambda p: p.name)
def test_a_signature_check_answers_the_request_either_way(path: Path) -> None:
    """The webhook goes to "Verify signature", whose error output answers 401 ("Reject") and
    whose output answers 204 ("Accept") before the rest of the workflow reads the event."""
    workflow = load(path)
    verify = node(workflow, "Verify signature")
    assert verify["onError"] == "continueErrorOutput"
    accepted, rejected = workflow["connections"]["Verify signature"]["main"]
    assert [link["node"] for link in accepted] == ["Accept"]
    assert [link["node"] for link in rejected] == ["Reject"]
    assert node(workflow, "Accept")["parameters"]["options"] == {"responseCode": 204}
    assert node(workflow, "Reject")["parameters"]["options"] == {"responseCode": 401}
    assert workflow["connections"]["Accept"]["main"] == [
        [{"node": "Succeeded?", "type": "main", "index": 0}]
    ]


def test_a_rejected_resume_waits_again_for_the_real_webhook() -> None:
    """A request the bridge did not sign does not end the execution: it waits again."""
    workflow = load(RESUME)
    assert workflow["connections"]["Reject"]["main"] == [
        [{"node": "Wait for the image", "type": "main", "index": 0}]
    ]


def test_both_workflows_share_one_verification() -> None:
    """The two Code nodes differ only in where their secret comes from."""
    shared = [
        verification_code(load(path)).split(LIBRARY_MARKER) for path in (RESUME, SUBSCRIPTION)
    ]
    assert [len(parts) for parts in shared] == [2, 2]
    assert shared[0][1] == shared[1][1]


def test_resume_workflow_registers_the_resume_url_with_its_header() -> None:
    """The generate call carries the resume URL, the header the Wait node checks, 404/409."""
    workflow = load(RESUME)
    execution = Execution("https://n8n.example.com/webhook-waiting/4711", nodes={})
    execution.nodes["Settings"] = settings(workflow)
    url, body = request_of(workflow, "Generate and watch", execution)
    values = execution.nodes["Settings"]
    assert url == f"{values['bridge_url']}/v1/generate"
    assert body["callback_url"] == execution.resume_url
    assert body["callback_headers"] == {values["resume_header_name"]: values["resume_header_value"]}
    assert body["final_statuses"] == [404, 409]
    assert body["input"] == {"prompt": values["prompt"]}
    assert body["upstream"] == values["upstream"] == "default"
    assert body["metadata"] == {"n8n_execution_id": execution.id}


def test_rendering_escapes_values_as_json() -> None:
    """A prompt with quotes and a newline still makes a valid body (JSON.stringify)."""
    workflow = load(RESUME)
    prompt = 'a "quoted"\nprompt'
    execution = Execution("https://n8n.example.com/webhook-waiting/1")
    execution.nodes["Settings"] = settings(workflow, prompt=prompt)
    _, body = request_of(workflow, "Generate and watch", execution)
    assert body["input"]["prompt"] == prompt


def test_subscription_workflow_registers_its_webhook() -> None:
    """The one-time request subscribes the Webhook node's URL, which keeps the raw body for the
    signature check and answers through the Respond to Webhook nodes."""
    workflow = load(SUBSCRIPTION)
    hook = node(workflow, "Bridge events")
    assert hook["parameters"]["httpMethod"] == "POST"
    assert hook["parameters"]["responseMode"] == "responseNode"
    assert hook["parameters"]["options"]["rawBody"] is True
    assert hook["parameters"]["path"] in settings(workflow)["events_url"]
    assert verification_code(workflow).count(SECRET_PLACEHOLDER) == 1
    execution = Execution("unused")
    execution.nodes["Settings"] = values = settings(workflow)
    url, body = request_of(workflow, "Register the subscription", execution)
    assert url == f"{values['bridge_url']}/v1/subscriptions"
    assert body == {"url": values["events_url"], "events": ["job.succeeded", "job.failed"]}


@pytest.mark.parametrize("length", [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000])
def test_the_verification_computes_hmac_sha256(node_binary: str, length: int) -> None:
    """The workflows' own SHA-256 and HMAC (no crypto module in n8n's Code node) agree with
    Python's, across the lengths where padding spills into another block, for short keys and
    keys longer than a block."""
    message = bytes(range(256)) * 4
    library = LIBRARY_MARKER + verification_code(load(SUBSCRIPTION)).split(LIBRARY_MARKER)[1]
    keys = [b"k" * 32, bytes(range(100))]
    code = (
        f"const message = Buffer.from('{message[:length].hex()}', 'hex');\n"
        f"const keys = {json.dumps([key.hex() for key in keys])};\n"
        "return keys.map((key) => ({ json: { mac: Buffer.from(hmacSha256("
        "Buffer.from(key, 'hex'), message)).toString('hex'), digest: Buffer.from("
        "sha256(message)).toString('hex') } }));\n" + library
    )
    result = run_code(node_binary, code, {"json": {}})["result"]
    assert [item["json"]["mac"] for item in result] == [
        hmac.new(key, message[:length], hashlib.sha256).hexdigest() for key in keys
    ]
    assert result[0]["json"]["digest"] == hashlib.sha256(message[:length]).hexdigest()


# The requests, for real.


def _generate(
    bridge: Bridge, resume_url: str, header: tuple[str, str], **more: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Send the resume workflow's generate call, rendered for `resume_url` (and other Settings
    in `more`): the 201 answer, and the Settings node's values it was rendered with."""
    workflow = load(RESUME)
    execution = Execution(resume_url)
    execution.nodes["Settings"] = values = settings(
        workflow,
        bridge_url=bridge.url,
        resume_header_name=header[0],
        resume_header_value=header[1],
        **more,
    )
    url, body = request_of(workflow, "Generate and watch", execution)
    body["input"]["sim"] = FAST_JOB
    response = bridge.client.post(url, json=body)
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer, values


@pytest.mark.e2e
def test_resume_url_gets_the_envelope_with_the_configured_header(
    bridge: Bridge, receiver: Receiver
) -> None:
    """The resume URL, with the secret query of an n8n 2.x one, receives the signed envelope
    and the header the Wait node checks; the bridge shows the URL with the query masked."""
    name = unique("n8n-resume")
    header = ("X-Resume-Token", unique("token"))
    resume_url = receiver.callback(name, signature="5f3e9a7c0d")
    answer, _ = _generate(bridge, resume_url, header)
    hook = receiver.wait_for(name)[0]
    assert hook.query == "signature=5f3e9a7c0d"  # delivered to the URL as registered
    assert hook.headers["x-resume-token"] == header[1]
    envelope = hook.verify(answer["watch"]["secret"])
    assert envelope["job_id"] == answer["job_id"]
    assert envelope["status"] == "succeeded"  # what the workflow's "Succeeded?" node reads
    assert envelope["image_urls"]
    assert envelope["metadata"] == {"n8n_execution_id": "4711"}
    shown = bridge.watch(answer["watch"]["id"])["callback_url"]
    assert shown == f"{receiver.callback(name)}?signature=********"


@pytest.mark.e2e
def test_the_upstream_setting_picks_the_upstream(
    start_bridge: StartBridge, upstream: Upstream, receiver: Receiver
) -> None:
    """With `upstream` set to another of the bridge's upstreams in Settings, the generation
    starts there: the watch and the envelope name it."""
    bridge = start_bridge(
        BRIDGE_UPSTREAMS__STUDIO__BASE_URL=upstream.url, BRIDGE_UPSTREAMS__STUDIO__API_KEY=API_KEY
    )
    name = unique("n8n-upstream")
    answer, _ = _generate(
        bridge, receiver.callback(name), ("X-Resume-Token", "t"), upstream="studio"
    )
    assert answer["watch"]["upstream"] == "studio"
    envelope = receiver.wait_for(name)[0].verify(answer["watch"]["secret"])
    assert (envelope["upstream"], envelope["status"]) == ("studio", "succeeded")


@pytest.mark.e2e
def test_resume_workflow_verifies_the_resume_webhook(
    bridge: Bridge, receiver: Receiver, node_binary: str
) -> None:
    """The resume workflow's Code node, with the secret of the generate answer, accepts the
    webhook the bridge sent and refuses it altered, stale or unsigned; with another secret (or
    the Settings' one while the answer has a secret) it refuses it too."""
    name = unique("n8n-verify")
    answer, values = _generate(bridge, receiver.callback(name), ("X-Resume-Token", "t"))
    hook = receiver.wait_for(name)[0]
    code = verification_code(load(RESUME))
    nodes = {"Generate and watch": answer, "Settings": values}
    assert_verifies_only_what_the_bridge_signed(node_binary, code, hook, nodes)

    stamp = int(hook.headers["webhook-timestamp"])
    other = {"Generate and watch": {**answer, "watch": {**answer["watch"], "secret": None}}}
    for secret in ("whsec_" + base64.b64encode(b"another secret of 24 bytes").decode(), ""):
        other["Settings"] = {**values, "signing_secret": secret}
        refused = run_code(node_binary, code, webhook_item(hook), other, now=stamp)
        assert "error" in refused, secret
    other["Settings"] = {**values, "signing_secret": answer["watch"]["secret"]}
    assert "result" in run_code(node_binary, code, webhook_item(hook), other, now=stamp)


def test_resume_workflow_goes_on_when_the_wait_times_out(node_binary: str) -> None:
    """Resumed by its time limit, the Wait node passes on its input, without headers: the Code
    node lets it through as timed out, and "Succeeded?" sends it to "Generation failed"."""
    code = verification_code(load(RESUME))
    answer = {"job_id": "job_1", "watch": {"secret": "whsec_x"}, "upstream": {}}
    result = run_code(node_binary, code, {"json": answer}, {"Generate and watch": answer})
    assert result == {"result": [{"json": {"timed_out": True, "body": {}}}]}


@pytest.mark.e2e
def test_a_finished_execution_answering_404_ends_the_retries(
    bridge: Bridge, receiver: Receiver
) -> None:
    """n8n answers 404 once the execution is over: one attempt, then the watch fails."""
    name = unique("n8n-over")
    answer, _ = _generate(bridge, receiver.callback(name, respond="404"), ("X-Resume-Token", "t"))
    watch = bridge.wait_for_status(answer["watch"]["id"], "failed")
    attempts = bridge.deliveries(watch["id"])
    assert [a["status_code"] for a in attempts] == [404]
    assert len(receiver.hooks(name)) == 1


@pytest.mark.e2e
def test_subscription_workflow_verifies_every_final_event(
    start_bridge: StartBridge, upstream: Upstream, receiver: Receiver, node_binary: str
) -> None:
    """Registered once, the Webhook node's URL gets a callback-less watch's event, which the
    workflow's Code node, given the registration's secret, accepts as sent and refuses
    altered, stale, unsigned or checked with another secret."""
    bridge = start_bridge()  # its own: a subscription sees every watch of the tenant
    name = unique("n8n-events")
    workflow = load(SUBSCRIPTION)
    execution = Execution("unused")
    execution.nodes["Settings"] = settings(
        workflow, bridge_url=bridge.url, events_url=receiver.callback(name)
    )
    url, body = request_of(workflow, "Register the subscription", execution)
    registered = bridge.client.post(url, json=body)
    assert registered.status_code == 201, registered.text
    secret = registered.json()["secret"]
    job = upstream.create_job(unique("job"), **FAST_JOB)
    watch = bridge.register(job_id=job)
    hook = receiver.wait_for(name)[0]
    envelope = hook.verify(secret)
    assert envelope["watch_id"] == watch["id"]
    assert envelope["status"] == "succeeded"  # what the workflow's "Succeeded?" node reads

    code = verification_code(workflow)
    assert_verifies_only_what_the_bridge_signed(
        node_binary, code.replace(SECRET_PLACEHOLDER, secret), hook
    )
    stamp = int(hook.headers["webhook-timestamp"])
    refused = run_code(node_binary, code, webhook_item(hook), now=stamp)
    assert "no signing secret" in refused["error"]  # not pasted yet
    another = "whsec_" + base64.b64encode(b"another secret of 32 bytes......").decode()
    refused = run_code(node_binary, code.replace(SECRET_PLACEHOLDER, another), webhook_item(hook))
    assert "webhook-signature does not match" in refused["error"]
