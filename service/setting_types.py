"""Pure: the numbers of the settings (service/config.py) and of upstream profiles
(service/profile.py). pydantic's lax mode reads true and false as 1 and 0, so `timeout_s = true`
would run as one second: these refuse a boolean, and the error names the key. (pydantic's strict
numbers would refuse the strings that variables hold, too.)"""

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
