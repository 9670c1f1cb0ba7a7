"""Dashboard sign-outs, kept in the store so that every replica refuses a signed-out cookie."""

from __future__ import annotations

from service.store.base import Store


class SignOuts:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def revoked(self, session_id: str) -> bool:
        """Whether the sign-in was ended by its sign-out (on any replica)."""
        return await self._store.session_revoked(session_id)

    async def revoke(self, session_id: str, expires_at: float) -> None:
        """End the sign-in for good: its cookie, wherever copied, is refused from now on."""
        await self._store.revoke_session(session_id, expires_at)
