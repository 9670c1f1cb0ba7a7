"""Real store outages for tests: a TCP proxy to cut a database off, a small disk to fill.

`TcpProxy` forwards a loopback port to a server (PostgreSQL); `stop` cuts every connection and
refuses new ones, as a database that went away, and `start` accepts them again on the same port.
`small_disk` mounts a size-limited file system (tmpfs) and `fill` fills it, so that SQLite
answers "database or disk is full" as on a full volume; mounting needs root, so without it the
test is skipped (or fails under CI=true, where it must run).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest


class TcpProxy:
    """Forwards connections from 127.0.0.1:`port` to `target`, until stopped."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0  # chosen by the first start, kept by the next ones
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and cut the open ones (both ends see them end)."""
        with self._lock:
            listener, self._listener = self._listener, None
            cut, self._open = self._open, set()
        if listener is not None:
            cut.add(listener)
        for sock in cut:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked on it
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    client.close()
                    server.close()
                    return
                self._open |= {client, server}
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def small_disk(directory: Path, size: str = "16m") -> Iterator[Path]:
    """A tmpfs of `size` mounted at `directory` (created) until the end of the block."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(directory)],
            capture_output=True,
            text=True,
            check=False,
        )
        failure = mounted.stderr.strip() if mounted.returncode else None
    except FileNotFoundError as error:
        failure = str(error)
    if failure is not None:
        reason = f"a size-limited file system cannot be mounted here ({failure}); run as root"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: the full-disk tests must run in CI", pytrace=False)
        pytest.skip(reason)
    try:
        yield directory
    finally:
        subprocess.run(["umount", "--lazy", str(directory)], check=True)


def fill(directory: Path) -> Path:
    """Fill the file system of `directory` with one file, to the last byte; that file."""
    filler = directory / "filler"
    chunk = bytes(64 * 1024)
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            os.write(descriptor, chunk)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
    finally:
        os.close(descriptor)
    return filler
