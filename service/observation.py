"""What one poll of the upstream saw: the record `service.upstream` reads from an answer, and
the only thing the polling rules, the circuit breaker and the metrics look at."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["progress", "terminal", "refused", "transient"]


@dataclass(frozen=True, slots=True)
class Observation:
    """What one poll saw."""

    kind: Kind
    job_status: str | None = None
    queue_position: int | None = None
    # The upstream's body exactly as sent, and parsed, when it was a JSON object; of a refusal,
    # only the document, with the secrets masked.
    body: bytes | None = None
    document: dict[str, Any] | None = None
    error_code: str | None = None
    error: str | None = None
    retry_after: str | None = None
    http_status: int | None = None
    # What the upstream's profile finds in the answer besides the status: how far processing
    # is (0..1), the seconds it predicts are left, the output URLs and its own error text.
    progress: float | None = None
    eta_s: float | None = None
    outputs: tuple[str, ...] | None = None
    message: str | None = None
