"""Pure: upstream profiles, how the bridge talks to one polled job API and reads its answers.

A profile is declared, never coded: the request that asks for a job's status (method, path
template, headers, how the key is sent), JMESPath expressions locating the status word, queue
position, progress, ETA, error and output URLs in the answer, the meaning of each status word
and of the HTTP statuses that refuse a job, and optionally a result request made once the job
succeeded and the request that starts a job. The built-in ones are TOML files in
service/profiles/; an operator declares others in `[upstreams.<name>.profile]`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult
from jmespath.visitor import TreeInterpreter
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from service import header_fields
from service.number_fields import NOT_A_BOOLEAN, Int

Target = Literal["queued", "processing", "succeeded", "failed", "not_found"]
AuthScheme = Literal["bearer", "key", "header", "query", "none"]
# `{job_id}` is the one placeholder of a path template.
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def _compiles(expression: str) -> str:
    try:
        jmespath.compile(expression)
    except JMESPathError as error:
        detail = " ".join(str(error).split())
        raise ValueError(f"{expression!r} is not a JMESPath expression: {detail}") from None
    return expression


def _path_template(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError(f"{path!r} must start with /")
    names = _PLACEHOLDER.findall(path)
    if "job_id" not in names:
        raise ValueError(f"{path!r} has no {{job_id}}; write where the job id goes")
    others = sorted(set(names) - {"job_id"})
    if others:
        raise ValueError(f"{path!r} names {{{others[0]}}}; only {{job_id}} is filled in")
    return path


def _server_error(status: int) -> int:
    if not 500 <= status <= 599:
        raise ValueError(f"{status} is not a 5xx: a 4xx other than 429 already ends the job failed")
    return status


JMESPath = Annotated[str, AfterValidator(_compiles)]
PathTemplate = Annotated[str, AfterValidator(_path_template)]
Statuses = tuple[Annotated[Int, Field(ge=100, le=599)], ...]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StatusRequest(_Part):
    method: Literal["GET", "POST"] = "GET"
    path: PathTemplate = "/api/v1/generate/{job_id}"
    headers: dict[str, str] = {}

    @model_validator(mode="after")
    def _headers(self) -> StatusRequest:
        # Sent with every request: one the upstream refuses would fail each one.
        header_fields.check_fields(self.headers)
        return self


class Auth(_Part):
    """How the API key is sent: `Authorization: Bearer <key>` (bearer), `Authorization: Key
    <key>` (key), a header of its own (header) or a query parameter (query) named `name`."""

    scheme: AuthScheme = "bearer"
    name: str | None = None

    @model_validator(mode="after")
    def _named(self) -> Auth:
        if self.scheme in ("header", "query") and not self.name:
            raise ValueError(f"auth scheme {self.scheme!r} needs a name (the key's {self.scheme})")
        if self.scheme == "header" and self.name:
            header_fields.check_name(self.name)
        return self


class Read(_Part):
    """Where each thing is in a status answer (JMESPath)."""

    status: JMESPath = "status"
    queue_position: JMESPath | None = None
    progress: JMESPath | None = None
    progress_scale: Annotated[Literal[1, 100], NOT_A_BOOLEAN] = 1
    eta_s: JMESPath | None = None
    error: JMESPath | None = None
    outputs: JMESPath | None = None
    # Where a succeeded answer's output is, when the API promises an object there: an answer
    # with something else is malformed, and read again at the next poll.
    output_object: JMESPath | None = None


class HttpMeaning(_Part):
    """The HTTP statuses of a status request: answers to read, and refusals that end a job."""

    ok: Statuses = (200,)
    not_found: Statuses = (404,)
    unauthorized: Statuses = (401, 403)
    bad_request: Statuses = (400,)


class ResultRequest(_Part):
    """A request made once when the job succeeded; its answer is the one delivered. A 4xx
    (but 429) ends the job failed, as does an answer with one of the `failed` statuses whose
    body has the upstream's words at `error` (a gateway's own error page says nothing of the
    job: it is asked again)."""

    method: Literal["GET", "POST"] = "GET"
    path: PathTemplate
    outputs: JMESPath | None = None
    error: JMESPath | None = None
    failed: tuple[Annotated[Int, AfterValidator(_server_error)], ...] = ()

    @model_validator(mode="after")
    def _failure_readable(self) -> ResultRequest:
        if self.failed and self.error is None:
            raise ValueError("failed statuses need an error path: where the job's failure is said")
        return self


class CreateRequest(_Part):
    """How `POST /v1/generate` starts a job: the body is passed through."""

    method: Literal["POST", "PUT"] = "POST"
    path: str = Field("/api/v1/generate", pattern=r"^/")
    job_id: JMESPath = "id"


class Profile(_Part):
    status: StatusRequest = StatusRequest()
    auth: Auth = Auth()
    read: Read = Read()
    statuses: dict[str, Target] = Field(default_factory=dict, min_length=1)
    http: HttpMeaning = HttpMeaning()
    result: ResultRequest | None = None
    create: CreateRequest | None = None

    @model_validator(mode="after")
    def _can_end(self) -> Profile:
        ends = set(self.statuses.values()) & {"succeeded", "failed"}
        if not ends:
            raise ValueError("statuses map no word to succeeded or failed: no job could end")
        return self


def compiled(expression: str | None) -> ParsedResult | None:
    return None if expression is None else jmespath.compile(expression)


# Every search shares one interpreter (it keeps no state of a search): `ParsedResult.search`
# builds a new one each call, which cost more than the rest of reading an answer.
_INTERPRETER = TreeInterpreter()


class Unreadable(Exception):
    """A profile's expression failed on an answer (a function given a value of another type,
    or `ceil` of an infinite number)."""


def search(expression: ParsedResult | None, document: Any) -> Any:
    """The value at `expression` in `document`; None without one, or where nothing is;
    `Unreadable` when the expression fails on this document."""
    if expression is None:
        return None
    try:
        return _INTERPRETER.visit(expression.parsed, document)
    except (JMESPathError, TypeError, ValueError, ArithmeticError) as error:
        detail = " ".join(str(error).split())
        raise Unreadable(f"{expression.expression!r} failed on it ({detail})") from None


def fill(template: str, job_id: str) -> str:
    return template.replace("{job_id}", job_id)


_REFUSAL_WORDS = {
    "bad_request": "the upstream refused the request as malformed",
    "unauthorized": "the upstream refused the API key",
    "not_found": "the upstream does not know this job",
}


@dataclass(frozen=True, slots=True)
class Reader:
    """A profile made ready to read answers: its expressions compiled once."""

    profile: Profile
    status: ParsedResult
    queue_position: ParsedResult | None
    progress: ParsedResult | None
    eta_s: ParsedResult | None
    error: ParsedResult | None
    outputs: ParsedResult | None
    output_object: ParsedResult | None
    result_outputs: ParsedResult | None
    result_error: ParsedResult | None
    result_failed: frozenset[int]
    create_job_id: ParsedResult
    # HTTP status -> (error_code, sentence) of the answers that end a job.
    refusals: Mapping[int, tuple[str, str]]

    @classmethod
    def of(cls, profile: Profile) -> Reader:
        read, result, http = profile.read, profile.result, profile.http
        refusals = {
            status: (code, f"{_REFUSAL_WORDS[code]} ({status})")
            for code, statuses in (
                ("bad_request", http.bad_request), ("unauthorized", http.unauthorized),
                ("not_found", http.not_found),
            )
            for status in statuses
        }  # fmt: skip
        create = profile.create or CreateRequest()
        return cls(
            profile, jmespath.compile(read.status), compiled(read.queue_position),
            compiled(read.progress), compiled(read.eta_s), compiled(read.error),
            compiled(read.outputs), compiled(read.output_object),
            compiled(result.outputs if result else None),
            compiled(result.error if result else None),
            frozenset(result.failed if result else ()), jmespath.compile(create.job_id),
            refusals,
        )  # fmt: skip
