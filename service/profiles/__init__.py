"""The built-in upstream profiles: one TOML file each, in the format of `service.profile`."""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources

from service.profile import Profile

DEFAULT = "betterwaifu"


def names() -> tuple[str, ...]:
    """The built-in profiles' names, sorted."""
    files = resources.files(__package__).iterdir()
    return tuple(sorted(f.name.removesuffix(".toml") for f in files if f.name.endswith(".toml")))


@cache
def builtin(name: str) -> Profile:
    """The built-in profile `name`; KeyError if there is none."""
    if name not in names():
        raise KeyError(name)
    text = resources.files(__package__).joinpath(f"{name}.toml").read_text()
    return Profile.model_validate(tomllib.loads(text))
