"""Pure: an answer's body, decoded from its Content-Encoding chunk by chunk, never past a cap.

The bridge asks the upstream for `identity`. An upstream that compresses anyway may use one
coding the standard library decodes; each chunk is inflated with an output limit, so a few
hundred bytes that would inflate to gigabytes cost at most the cap. Stacked codings
(`gzip, gzip`) and codings the bridge does not decode are refused before reading the body.
"""

from __future__ import annotations

import zlib

# The codings decoded, and their zlib window bits. br and zstd would need libraries the bridge
# does not install (httpx cannot decode them here either).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
DECODABLE = tuple(_WBITS)


class Refused(Exception):
    """A body not read whole; the message completes "upstream answered ..."."""


def codings(content_encoding: str) -> list[str]:
    """The codings a Content-Encoding names, in the order they were applied, without
    `identity`."""
    named = (part.strip().lower() for part in content_encoding.split(","))
    return [coding for coding in named if coding and coding != "identity"]


class CappedBody:
    """A body received chunk by chunk: decoded from at most one coding, and refused as soon as
    it is known to be longer than `cap` bytes, encoded or decoded."""

    def __init__(self, content_encoding: str | None, cap: int) -> None:
        self._cap = cap
        self._body = bytearray()
        self._received = 0
        named = codings(content_encoding) if content_encoding else []
        if len(named) > 1:
            raise Refused(f"a body encoded more than once: {', '.join(named)}")
        self._coding = named[0] if named else ""
        if self._coding and self._coding not in _WBITS:
            raise Refused(
                f"a body encoded {self._coding!r}, which the bridge does not decode (only "
                f"{' or '.join(DECODABLE)})"
            )
        self._inflater = zlib.decompressobj(_WBITS[self._coding]) if self._coding else None

    @property
    def complete(self) -> bool:
        """Whether a compressed stream has ended: whatever follows it is not read."""
        return self._inflater is not None and self._inflater.eof

    def add(self, chunk: bytes) -> None:
        self._received += len(chunk)
        if self._received > self._cap:
            raise Refused(f"more than {self._cap} bytes")
        inflater = self._inflater
        if inflater is None:
            self._body += chunk
            return
        room = self._cap - len(self._body)
        try:
            # One byte past the room is enough to know the body is too long.
            self._body += inflater.decompress(chunk, room + 1)
        except zlib.error as error:
            raise Refused(f"a {self._coding} body that does not decode ({error})") from None
        if len(self._body) > self._cap:
            raise Refused(f"more than {self._cap} bytes")

    def body(self) -> bytes:
        """The whole body, once every chunk was added."""
        if self._inflater is not None and not self._inflater.eof:
            raise Refused(f"a {self._coding} body cut short")
        return bytes(self._body)
