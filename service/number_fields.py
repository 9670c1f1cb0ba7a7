"""Pure: the numbers of the settings (service/config.py), of upstream profiles
(service/profile.py) and of request bodies (service/api/models.py). pydantic's lax mode reads
true and false as 1 and 0, so `timeout_s = true` would run as one second: these refuse a
boolean, and the error names the field. A number written as text is still read: environment
variables hold only text, and no-code tools send every value they map as text."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator


def _not_a_boolean(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"{str(value).lower()} is not a number")
    return value


NOT_A_BOOLEAN = BeforeValidator(_not_a_boolean)
Float = Annotated[float, NOT_A_BOOLEAN]
Int = Annotated[int, NOT_A_BOOLEAN]
