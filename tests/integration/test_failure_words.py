"""A webhook request that got no answer, worded for people (`sender.describe`), as real peers on
loopback make it fail: a closed port, a server that speaks no TLS, a certificate nobody signed,
a connection closed or reset without an answer, a host name that does not exist (through a
resolver that knows none), the callback policy."""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from service import ssrf
from service.config import DeliverySettings, LogSettings, SecuritySettings
from service.http_clients import delivery_transport, transport
from service.sender import InlineSender, ProcessSender, Sender

DELIVERY = DeliverySettings(timeout_s=2, max_response_bytes=64)
ALLOWED = SecuritySettings(allow_private_callbacks=True)
HEADERS = {"content-type": "application/json", "webhook-id": "msg_1"}
# Starts a peer that answers the given bytes (None: closes without a byte); its port.
Peer = Callable[[bytes | None], Awaitable[int]]


def inline() -> Sender:
    transport = delivery_transport(DELIVERY, ALLOWED)
    return InlineSender(transport, DELIVERY.timeout_s, DELIVERY.max_response_bytes)


def in_process() -> Sender:
    return ProcessSender(DELIVERY, ALLOWED, LogSettings(level="warning", format="json"))


@pytest.fixture(params=[inline, in_process], ids=["inline", "process"])
async def sender(request: pytest.FixtureRequest) -> AsyncIterator[Sender]:
    make: Callable[[], Sender] = request.param
    made = make()
    try:
        yield made
    finally:
        await made.aclose()


async def error_of(sender: Sender, url: str) -> str | None:
    answer = await sender.send("POST", url, HEADERS, b"{}")
    assert answer.status_code is None, answer
    return answer.error


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    """`peer(answer)`: a loopback TCP server that reads the request and writes `answer` (HTTP
    or not), or closes at once without a byte (None); its port."""
    servers: list[asyncio.Server] = []

    async def start(answer: bytes | None) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1024)
            if answer is not None:
                writer.write(answer)
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def self_signed(directory: Path) -> ssl.SSLContext:
    """A server's TLS context whose certificate for 127.0.0.1 nobody signed."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    (directory / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


async def test_a_closed_port_is_connection_refused(sender: Sender) -> None:
    assert await error_of(sender, f"http://127.0.0.1:{closed_port()}/hooks") == (
        "connection refused"
    )


async def test_a_peer_that_speaks_no_tls_fails_the_handshake(sender: Sender, peer: Peer) -> None:
    """An https:// callback whose server answers in plain HTTP."""
    port = await peer(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    assert await error_of(sender, f"https://127.0.0.1:{port}/hooks") == (
        "TLS handshake failed: wrong version number"
    )


async def test_a_certificate_nobody_signed_fails_the_handshake(
    sender: Sender, tmp_path: Path
) -> None:
    async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(ok, "127.0.0.1", 0, ssl=self_signed(tmp_path))
    port = server.sockets[0].getsockname()[1]
    try:
        error = await error_of(sender, f"https://127.0.0.1:{port}/hooks")
    finally:
        server.close()
        await server.wait_closed()

    assert error == (
        "TLS handshake failed: the certificate of 127.0.0.1 is not valid (self-signed certificate)"
    )


async def test_a_peer_that_closes_without_answering(sender: Sender, peer: Peer) -> None:
    port = await peer(None)

    assert await error_of(sender, f"http://127.0.0.1:{port}/hooks") == (
        "the receiver closed the connection without answering"
    )


async def test_no_answer_in_time_is_timed_out(sender: Sender) -> None:
    """A server that accepts the connection and never answers."""
    never = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await never.wait()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        error = await error_of(sender, f"http://127.0.0.1:{port}/hooks")
    finally:
        never.set()
        server.close()
        await asyncio.sleep(0)  # the handlers close their connections
        await server.wait_closed()

    assert error == f"timed out after {DELIVERY.timeout_s:g} s"


class NoSuchHost(AbstractResolver):
    """A resolver that knows no host, as a DNS server answers for a name that does not exist."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def close(self) -> None:
        pass


async def test_a_host_that_does_not_exist_is_a_dns_failure() -> None:
    """Through the callback connector (its resolver answering that no such host exists)."""
    connector = ssrf.GuardedConnector(ALLOWED.callback_policy(), resolver=NoSuchHost())
    sender = InlineSender(transport(connector), DELIVERY.timeout_s, DELIVERY.max_response_bytes)
    try:
        error = await error_of(sender, "https://hooks.nowhere.example/in")
    finally:
        await sender.aclose()

    assert error == "DNS: no such host hooks.nowhere.example"


async def test_the_callback_policy_says_why_it_refused() -> None:
    """A sender whose policy refuses loopback names the address and the way out."""
    refused = SecuritySettings(allow_private_callbacks=False)
    sender = InlineSender(
        delivery_transport(DELIVERY, refused), DELIVERY.timeout_s, DELIVERY.max_response_bytes
    )
    try:
        error = await error_of(sender, f"http://127.0.0.1:{closed_port()}/hooks")
    finally:
        await sender.aclose()

    assert error is not None
    assert error.startswith("refused by the callback policy: ")
    assert "127.0.0.1" in error
