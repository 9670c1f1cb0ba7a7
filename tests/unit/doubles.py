"""Test doubles shared by the unit tests."""

from __future__ import annotations


class Sleeps:
    """A sleep that returns at once and remembers what it was asked for."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
