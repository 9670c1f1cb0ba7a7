"""The n8n workflows (integrations/n8n) import cleanly and their requests work on a real bridge.

The shape checks read the exported JSON the way n8n's importer does: nodes with the fields it
needs, unique names and ids, connections between nodes that exist. The end-to-end checks take
the HTTP Request node's URL and body straight from the workflow, render its n8n expressions
(with the Wait node's resume URL pointing at the receiver) and send them to the bridge, so the
workflow a user imports is the request that was tested.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import ROOT, Bridge, Receiver, StartBridge, Upstream, unique

WORKFLOWS = ROOT / "integrations" / "n8n"
RESUME = WORKFLOWS / "resume-url-workflow.json"
SUBSCRIPTION = WORKFLOWS / "subscription-workflow.json"
# The node types (and versions) the workflows use: all built into current n8n.
TYPE_VERSIONS = {
    "n8n-nodes-base.manualTrigger": 1,
    "n8n-nodes-base.set": 3.4,
    "n8n-nodes-base.httpRequest": 4.2,
    "n8n-nodes-base.wait": 1.1,
    "n8n-nodes-base.webhook": 2,
    "n8n-nodes-base.if": 2,
    "n8n-nodes-base.stopAndError": 1,
}
TRIGGERS = {"n8n-nodes-base.manualTrigger", "n8n-nodes-base.webhook"}
# Steers the simulator's job (the generate call passes `input` unchanged): done in a second.
FAST_JOB = {"queue_positions": 0, "processing_s": 0.3}


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
    """The Wait node resumes on a POST to its resume URL, checked by header auth."""
    wait = node(load(RESUME), "Wait for the image")
    assert wait["parameters"]["resume"] == "webhook"
    assert wait["parameters"]["httpMethod"] == "POST"
    assert wait["parameters"]["incomingAuthentication"] == "headerAuth"
    assert "httpHeaderAuth" in wait["credentials"]
    uuid.UUID(wait["webhookId"])


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
    assert body["metadata"] == {"n8n_execution_id": execution.id}


def test_rendering_escapes_values_as_json() -> None:
    """A prompt with quotes and a newline still makes a valid body (JSON.stringify)."""
    workflow = load(RESUME)
    prompt = 'a "quoted"\nprompt'
    execution = Execution("https://n8n.example.com/webhook-waiting/1")
    execution.nodes["Settings"] = settings(workflow, prompt=prompt)
    _, body = request_of(workflow, "Generate and watch", execution)
    assert body["input"]["prompt"] == prompt


def test_subscription_workflow_registers_its_webhook_with_its_header() -> None:
    """The one-time request subscribes the Webhook node's URL, with the header it checks."""
    workflow = load(SUBSCRIPTION)
    hook = node(workflow, "Bridge events")
    assert hook["parameters"]["httpMethod"] == "POST"
    assert hook["parameters"]["authentication"] == "headerAuth"
    assert hook["parameters"]["path"] in settings(workflow)["events_url"]
    execution = Execution("unused")
    execution.nodes["Settings"] = values = settings(workflow)
    url, body = request_of(workflow, "Register the subscription", execution)
    assert url == f"{values['bridge_url']}/v1/subscriptions"
    assert body == {
        "url": values["events_url"],
        "events": ["job.succeeded", "job.failed"],
        "headers": {values["header_name"]: values["header_value"]},
    }


# The requests, for real.


def _generate(bridge: Bridge, resume_url: str, header: tuple[str, str]) -> dict[str, Any]:
    """Send the resume workflow's generate call, rendered for `resume_url`; the 201 answer."""
    workflow = load(RESUME)
    execution = Execution(resume_url)
    execution.nodes["Settings"] = settings(
        workflow,
        bridge_url=bridge.url,
        resume_header_name=header[0],
        resume_header_value=header[1],
    )
    url, body = request_of(workflow, "Generate and watch", execution)
    body["input"]["sim"] = FAST_JOB
    response = bridge.client.post(url, json=body)
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


@pytest.mark.e2e
def test_resume_url_gets_the_envelope_with_the_configured_header(
    bridge: Bridge, receiver: Receiver
) -> None:
    """The resume URL receives the signed envelope and the header the Wait node checks."""
    name = unique("n8n-resume")
    header = ("X-Resume-Token", unique("token"))
    answer = _generate(bridge, receiver.callback(name), header)
    hook = receiver.wait_for(name)[0]
    assert hook.headers["x-resume-token"] == header[1]
    envelope = hook.verify(answer["watch"]["secret"])
    assert envelope["job_id"] == answer["job_id"]
    assert envelope["status"] == "succeeded"  # what the workflow's "Succeeded?" node reads
    assert envelope["image_urls"]
    assert envelope["metadata"] == {"n8n_execution_id": "4711"}


@pytest.mark.e2e
def test_a_finished_execution_answering_404_ends_the_retries(
    bridge: Bridge, receiver: Receiver
) -> None:
    """n8n answers 404 once the execution is over: one attempt, then the watch fails."""
    name = unique("n8n-over")
    answer = _generate(bridge, receiver.callback(name, respond="404"), ("X-Resume-Token", "t"))
    watch = bridge.wait_for_status(answer["watch"]["id"], "failed")
    attempts = bridge.deliveries(watch["id"])
    assert [a["status_code"] for a in attempts] == [404]
    assert len(receiver.hooks(name)) == 1


@pytest.mark.e2e
def test_subscription_workflow_webhook_gets_every_final_event_with_its_header(
    start_bridge: StartBridge, upstream: Upstream, receiver: Receiver
) -> None:
    """Registered once, the Webhook node's URL gets a callback-less watch's event, with header."""
    bridge = start_bridge()  # its own: a subscription sees every watch of the tenant
    name, token = unique("n8n-events"), unique("token")
    workflow = load(SUBSCRIPTION)
    execution = Execution("unused")
    execution.nodes["Settings"] = settings(
        workflow,
        bridge_url=bridge.url,
        events_url=receiver.callback(name),
        header_name="X-Subscription-Token",
        header_value=token,
    )
    url, body = request_of(workflow, "Register the subscription", execution)
    registered = bridge.client.post(url, json=body)
    assert registered.status_code == 201, registered.text
    job = upstream.create_job(unique("job"), **FAST_JOB)
    watch = bridge.register(job_id=job)
    hook = receiver.wait_for(name)[0]
    assert hook.headers["x-subscription-token"] == token
    envelope = hook.verify(registered.json()["secret"])
    assert envelope["watch_id"] == watch["id"]
    assert envelope["status"] == "succeeded"  # what the workflow's "Succeeded?" node reads
