"""Pure: the reading of an upstream's answers, through its profile (`service.profile`).

`read_answer` turns a status code, headers and body into an `Observation`, the only thing the
polling rules look at; `read_creation` reads the answer to the request that starts a job.
No text the upstream sends reaches a tenant with a key in it: the key a request carried and
the bridge's own are masked (`Secrets`), and a refusal of the bridge's own key says only that.
Answers that are too large, encoded twice, not JSON, nested too deeply, of the wrong types or
that the profile cannot read are transient failures that say why (never a crash).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import orjson

from service import profiles
from service.observation import Observation
from service.profile import Reader, Unreadable, search

PROGRESS_STATUSES = frozenset({"queued", "processing"})
# The profile of `[upstream]` and of every caller that names none.
DEFAULT_READER = Reader.of(profiles.builtin(profiles.DEFAULT))
# The refusal of the bridge's own key (upstream.api_key): the upstream's words are not relayed.
BRIDGE_KEY_REFUSED = "the upstream refused the bridge's key"
REDACTED = "********"
MAX_ERROR_TEXT = 200
# Real answers nest a handful of levels; the bridge re-serializes what it keeps (orjson stops
# at 255 levels), so deeper documents are refused at the door.
MAX_DEPTH = 64
# The store keeps queue positions in a 64-bit column; a real queue is far shorter.
_MAX_QUEUE_POSITION = 2**31 - 1
# A job id the bridge watches: one segment of the upstream's path. No leading dot: "." and ".."
# would be read as other paths of the upstream (its API root), polled with the bridge's key.
JOB_ID = re.compile(r"^[A-Za-z0-9_:\-][A-Za-z0-9_.:\-]{0,127}$")
JOB_ID_RULE = "1 to 128 characters among A-Z a-z 0-9 _ . : - that do not start with a dot"


@dataclass(frozen=True, slots=True)
class Secrets:
    """The keys no text relayed from the upstream may show: the key a request carried and the
    bridge's own (longest first, so that a key holding another is masked whole);
    `bridge_key` when the request carried the bridge's own key."""

    keys: tuple[str, ...] = ()
    bridge_key: bool = False

    def redact(self, text: str) -> str:
        for key in self.keys:
            if key in text:
                text = text.replace(key, REDACTED)
        return text

    def redact_json(self, value: Any) -> Any:
        """A parsed JSON value with the keys masked in every string, names included."""
        if not self.keys:
            return value
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {self.redact(k): self.redact_json(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.redact_json(item) for item in value]
        return value


NO_SECRETS = Secrets()


def _upstream_message(
    document: dict[str, Any] | None, secrets: Secrets, where: Any, whole: bool = False
) -> str | None:
    """The upstream's own error text at `where` (a compiled JMESPath), cut to a sentence's
    length unless `whole`."""
    value = None if document is None else search(where, document)
    if isinstance(value, str) and value:
        # Masked before it is cut: a cut could leave the start of a key.
        return secrets.redact(value) if whole else secrets.redact(value)[:MAX_ERROR_TEXT]
    return None


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether `value` nests lists and objects more than `limit` levels deep."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _parse(body: bytes) -> tuple[dict[str, Any] | None, str]:
    """The body as a JSON object, or None and why it is not one."""
    if not body:
        return None, "an empty body"
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        return None, f"a body that is not JSON ({error})"
    if not isinstance(parsed, dict):
        return None, f"JSON that is not an object but {type(parsed).__name__}"
    # Each level opens a bracket: a body with few of them (in strings too) is shallow enough
    # without walking it.
    brackets = body.count(b"{") + body.count(b"[")
    if brackets > MAX_DEPTH and _deeper_than(parsed, MAX_DEPTH):
        return None, f"JSON nested more than {MAX_DEPTH} levels deep"
    return parsed, ""


def _queue_position(value: Any) -> int | None:
    """A queue position worth trusting: a small non-negative integer."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 <= value <= _MAX_QUEUE_POSITION else None
    return None


def _fraction(value: Any, scale: int) -> float | None:
    """A progress worth trusting: a number within 0..scale (not NaN), as a fraction."""
    # Compared before any conversion: an integer may be too large for a float.
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= scale:
        return value / scale
    return None


def _seconds(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 7 * 86400:
        return float(value)
    return None


def _outputs(value: Any) -> tuple[str, ...] | None:
    """The output URLs found: a string or a list of strings (other items dropped)."""
    found = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    urls = tuple(item for item in found if isinstance(item, str) and item)
    return urls or None


def _cannot_read(error: Unreadable, secrets: Secrets) -> str:
    text = f"upstream answered what its profile cannot read: {secrets.redact(str(error))}"
    return text[:MAX_ERROR_TEXT]


def _unreadable(status: int, error: Unreadable, secrets: Secrets) -> Observation:
    return Observation("transient", error=_cannot_read(error, secrets), http_status=status)


def _refusal(
    status: int, document: dict[str, Any] | None, secrets: Secrets, reader: Reader
) -> Observation:
    """The observation of an answer whose status ends the job (`reader.refusals`)."""
    code, sentence = reader.refusals[status]
    if code == "unauthorized" and secrets.bridge_key:
        # What the upstream says of the operator's key is not for tenants.
        error = f"{BRIDGE_KEY_REFUSED} ({status})"
        return Observation("refused", error_code=code, error=error, http_status=status)
    message = _upstream_message(document, secrets, reader.error)
    error = f"{sentence}: {message}" if message else sentence
    return Observation(
        "refused", document=secrets.redact_json(document), error_code=code, error=error,
        http_status=status,
    )  # fmt: skip


def read_answer(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    secrets: Secrets = NO_SECRETS,
    reader: Reader = DEFAULT_READER,
) -> Observation:
    """Classify one answer to a status request, read through `reader` (the upstream's
    profile); what a refusal relays has the `secrets` masked."""
    document, unreadable = _parse(body)
    try:
        if status in reader.refusals:
            return _refusal(status, document, secrets, reader)
        if status not in reader.profile.http.ok:
            kind_of = "rate limited" if status == 429 else f"answered HTTP {status}"
            return Observation(
                "transient", error=f"upstream {kind_of}", retry_after=headers.get("retry-after"),
                http_status=status,
            )  # fmt: skip
        if document is None:
            return Observation(
                "transient", error=f"upstream answered {unreadable}"[:MAX_ERROR_TEXT],
                http_status=status,
            )  # fmt: skip
        word = search(reader.status, document)
        if not isinstance(word, str):
            shown = "no status" if word is None else f"a status of type {_typed(word, secrets)}"
            return Observation("transient", error=f"upstream answered {shown}", http_status=status)
        job_status = reader.profile.statuses.get(word)
        if job_status in PROGRESS_STATUSES:
            read = reader.profile.read
            return Observation(
                "progress", job_status=job_status,
                queue_position=_queue_position(search(reader.queue_position, document)),
                progress=_fraction(search(reader.progress, document), read.progress_scale),
                eta_s=_seconds(search(reader.eta_s, document)),
                body=body, document=document, http_status=status,
            )  # fmt: skip
        if job_status == "not_found":  # a status word that says what a 404 would
            error = f"the upstream does not know this job (status {_shown(word, secrets)})"
            return Observation(
                "refused", document=secrets.redact_json(document), error_code="not_found",
                error=error, http_status=status,
            )  # fmt: skip
        if job_status is None:
            return Observation(
                "transient", http_status=status,
                error=f"upstream answered an unknown status {_shown(word, secrets)}",
            )  # fmt: skip
        output = search(reader.output_object, document)
        if job_status == "succeeded" and output is not None and not isinstance(output, dict):
            # Receivers read the outputs from there; a malformed one may be fixed by a later poll.
            shown = f"an output of type {_typed(output, secrets)}"
            return Observation(
                "transient", error=f"upstream answered succeeded with {shown}", http_status=status
            )
        return Observation(
            "terminal", job_status=job_status, body=body, document=document, http_status=status,
            outputs=_outputs(search(reader.outputs, document)),
            message=_upstream_message(document, NO_SECRETS, reader.error, whole=True),
        )  # fmt: skip
    except Unreadable as error:
        return _unreadable(status, error, secrets)


def read_result(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    secrets: Secrets,
    reader: Reader,
    ended: Observation,
) -> Observation:
    """Read the answer to a result request (`reader.profile.result`) of the job `ended`
    succeeded: the answer delivered; a refusal of the profile's (a key refused, say) ends the
    job as a status request's would; another 4xx ends it failed with the upstream's words, and
    so does one of the profile's `failed` statuses that has words; anything else is transient
    (the status is asked again)."""
    document, unreadable = _parse(body)
    try:
        if 200 <= status < 300 and document is not None:
            return Observation(
                "terminal", job_status="succeeded", body=body, document=document,
                http_status=status, outputs=_outputs(search(reader.result_outputs, document)),
            )  # fmt: skip
        if status in reader.refusals:
            return _refusal(status, document, secrets, reader)
        client_error = 400 <= status < 500 and status != 429
        if client_error or status in reader.result_failed:
            message = _upstream_message(document, secrets, reader.result_error, whole=True)
            if client_error or message:
                # No body: a raw-format webhook then carries the bridge's shape of a failure.
                return Observation(
                    "terminal", job_status="failed", document=ended.document, http_status=status,
                    message=message or f"the result request answered HTTP {status}",
                )  # fmt: skip
    except Unreadable as error:
        return _unreadable(status, error, secrets)
    why = f"HTTP {status}" if not 200 <= status < 300 else unreadable
    return Observation(
        "transient", error=f"upstream answered the result request with {why}"[:MAX_ERROR_TEXT],
        retry_after=headers.get("retry-after"), http_status=status,
    )  # fmt: skip


def _shown(word: str, secrets: Secrets) -> str:
    return repr(secrets.redact(word))[:40]


def _typed(value: Any, secrets: Secrets) -> str:
    """A value of the wrong type, named with its type and its JSON (the raw value, for whoever
    fixes the profile)."""
    raw = orjson.dumps(value).decode()
    return f"{type(value).__name__}: {secrets.redact(raw)[:40]}"


def network_failure(error: BaseException, secrets: Secrets = NO_SECRETS) -> Observation:
    """The observation of a request that got no answer; its error text (which may quote the
    request) has the `secrets` masked."""
    # The aiohttp transport reports most connection errors as httpx.ConnectTimeout: judge by
    # the original error underneath.
    root = error.__cause__ or error
    timed_out = isinstance(error, TimeoutError) or isinstance(root, TimeoutError)
    if timed_out or (root is error and isinstance(error, httpx.TimeoutException)):
        text = "upstream did not answer in time"
    else:
        detail = secrets.redact(str(root)) or type(root).__name__
        text = f"upstream request failed: {detail}"[:MAX_ERROR_TEXT]
    return Observation("transient", error=text)


@dataclass(frozen=True, slots=True)
class Creation:
    """What the upstream answered a request to start a job."""

    kind: Literal["created", "refused", "failed"]
    job_id: str | None = None
    # The answer, parsed, of a created job.
    document: dict[str, Any] | None = None
    http_status: int | None = None
    # Why it was refused (the upstream's own words) or why it failed.
    error: str | None = None
    retry_after: str | None = None


def _excerpt(body: bytes, document: dict[str, Any] | None, secrets: Secrets) -> str:
    """The start of a body as one line of printable text, the `secrets` masked (in JSON, once
    its escapes are read: a key may be spelt with them)."""
    if document is not None:
        text = orjson.dumps(secrets.redact_json(document)).decode()
    else:
        # Masked whole, before it is cut: a cut could leave the start of a key.
        text = secrets.redact(body.decode(errors="replace"))
    text = "".join(ch if ch.isprintable() else " " for ch in text[: MAX_ERROR_TEXT * 4])
    return " ".join(text.split())[:MAX_ERROR_TEXT]


def read_creation(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    secrets: Secrets = NO_SECRETS,
    reader: Reader = DEFAULT_READER,
) -> Creation:
    """Classify the answer to `POST /api/v1/generate`: a 2xx JSON object with a string `id`
    started a job; a 4xx refused the request (its `error`, else the start of its body, says
    why, the `secrets` masked; a refusal of the bridge's own key only says so); anything else
    failed, and may or may not have started a job."""
    document, unreadable = _parse(body)
    try:
        if 400 <= status < 500:
            if status in (401, 403) and secrets.bridge_key:
                # The operator's key to fix: no refusal of the caller's.
                return Creation(
                    "failed", http_status=status, error=f"{BRIDGE_KEY_REFUSED} ({status})"
                )
            message = (
                _upstream_message(document, secrets, reader.error)
                or _excerpt(body, document, secrets)
                or f"HTTP {status}"
            )
            return Creation(
                "refused", http_status=status, error=message, retry_after=headers.get("retry-after")
            )
        if not 200 <= status < 300:
            # A redirect too: following one could send the key and the request elsewhere.
            return Creation("failed", http_status=status, error=f"upstream answered HTTP {status}")
        if document is None:
            error = f"upstream answered {unreadable}"[:MAX_ERROR_TEXT]
            return Creation("failed", http_status=status, error=error)
        job_id = search(reader.create_job_id, document)
        if not isinstance(job_id, str) or not job_id:
            shown = "no job id" if job_id is None else f"a job id of type {_typed(job_id, secrets)}"
            if job_id == "":
                shown = "an empty job id"
            return Creation("failed", http_status=status, error=f"upstream answered {shown}")
        return Creation("created", job_id=job_id, document=document, http_status=status)
    except Unreadable as error:
        return Creation("failed", http_status=status, error=_cannot_read(error, secrets))
