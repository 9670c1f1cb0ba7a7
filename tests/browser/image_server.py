"""A loopback server of generated images for the browser tests: every GET is answered with the
same small PNG, and every request is recorded with its Host and Referer headers.

The browser reaches it under made-up names (`conftest.IMAGE_HOST`, `conftest.OTHER_IMAGE_HOST`)
that Chromium maps to 127.0.0.1: the bridge leaves loopback addresses out of `image_urls`, and a
second name on the same server shows which host a request was meant for.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WIDTH, HEIGHT = 64, 48


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A PNG of one colour (8-bit truecolour, no filter)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


@dataclass(frozen=True)
class Seen:
    host: str
    path: str
    referer: str | None


@dataclass
class ImageServer:
    port: int
    requests: list[Seen] = field(default_factory=list)

    def seen_by(self, host: str) -> list[Seen]:
        """The requests sent to `host` (a name, without the port)."""
        return [seen for seen in list(self.requests) if seen.host.partition(":")[0] == host]


@contextmanager
def running_image_server() -> Iterator[ImageServer]:
    image = png(WIDTH, HEIGHT, (31, 111, 235))
    server: ImageServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server.requests.append(
                Seen(self.headers.get("Host", ""), self.path, self.headers.get("Referer"))
            )
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(image)))
            self.end_headers()
            self.wfile.write(image)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the requests are recorded instead."""

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server = ImageServer(httpd.server_address[1])
    thread = threading.Thread(target=httpd.serve_forever, name="image-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
