"""The `webhook-bridge` command: serve, migrate, check-config, fake-upstream, listen,
check-upstream."""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import math
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service import __version__, config, gc_tuning
from service.errors import BridgeError, ConfigError


def serve(args: argparse.Namespace) -> int:
    import structlog
    import uvicorn
    import uvloop

    from service import http_server, logs
    from service.app import create_app, create_health_app, drain

    settings = config.load(args.config)
    logs.configure(settings.log)
    server = settings.server
    try:
        # Both ports are taken before the bridge starts (uvicorn would take them after, and a
        # port in use would end it with tracebacks), and the store is opened once: a refusal is
        # one line, in the log's format.
        api_sockets = _listen(server.host, server.port, "server.host", "server.port")
        health_sockets = (
            _listen(server.health_host, server.health_port, "server.health_host",
                    "server.health_port")
            if server.health_port is not None
            else []
        )  # fmt: skip
        asyncio.run(_check_store(settings))
    except BridgeError as error:
        structlog.get_logger("service.cli").error("bridge.cannot_start", detail=str(error))
        return 2
    common: dict[str, Any] = {
        "log_config": None,  # service.logs renders uvicorn's records, at the bridge's level
        "access_log": False,
        **http_server.uvicorn_options(server),
    }
    app = create_app(settings)
    gc_tuning.tune()
    api = http_server.ApiServer(
        uvicorn.Config(
            app,
            host=server.host,
            port=server.port,
            lifespan="on",
            # Connections only: long-polls and streams are answered as the bridge drains.
            timeout_graceful_shutdown=math.ceil(server.shutdown_grace_s) or 1,
            **common,
        ),
        on_exit=lambda: drain(app),
    )
    health = None
    if server.health_port is not None:
        health = http_server.HealthServer(
            uvicorn.Config(
                create_health_app(app),
                host=server.health_host,
                port=server.health_port,
                lifespan="off",
                **common,
            )
        )
    uvloop.run(_serve(api, api_sockets, health, health_sockets))
    return 0 if api.started else 1


def _listen(host: str, port: int, host_key: str, port_key: str) -> list[socket.socket]:
    """Sockets listening on `host`:`port`; ConfigError naming the setting to change if they
    cannot be: the port's when it is taken (or reserved), else the host's."""
    from service import http_server

    try:
        return http_server.listen(host, port)
    except (OSError, UnicodeError) as error:  # UnicodeError: a host name IDNA refuses
        bare_ipv6 = ":" in host and not host.startswith("[")
        address = f"[{host}]:{port}" if bare_ipv6 else f"{host}:{port}"
        reason = (getattr(error, "strerror", None) or str(error)).lower()
        taken = isinstance(error, OSError) and error.errno in (errno.EADDRINUSE, errno.EACCES)
        key, what = (port_key, "port") if taken else (host_key, "host")
        variable = config.env_name(tuple(key.split(".")))
        raise ConfigError(
            f"cannot listen on {address}: {reason}; choose another {what} with {key} ({variable})"
        ) from None


async def _serve(
    api: Any, api_sockets: list[socket.socket], health: Any, health_sockets: list[socket.socket]
) -> None:
    """Serve the API and, beside it, the health port, which answers (`/readyz` 503 while
    draining) until the API's shutdown is over."""
    if health is None:
        await api.serve(sockets=api_sockets)
        return
    health_task = asyncio.create_task(health.serve(sockets=health_sockets))
    try:
        await api.serve(sockets=api_sockets)
    finally:
        health.should_exit = True
        await health_task


async def _check_store(settings: config.Settings) -> None:
    from service import store

    backend = store.from_settings(settings.store)
    await backend.open()
    await backend.close()


def migrate(args: argparse.Namespace) -> int:
    from service import store

    async def run() -> list[int]:
        backend = store.from_settings(config.load(args.config).store)
        await backend.open(migrate=False)
        try:
            return await backend.migrate()
        finally:
            await backend.close()

    applied = asyncio.run(run())
    done = ", ".join(f"{version:04d}" for version in applied) or "none, it was up to date"
    print(f"migrations applied: {done}")
    return 0


def check_config(args: argparse.Namespace) -> int:
    print(json.dumps(config.masked(config.load(args.config)), indent=2))
    return 0


def hash_token(args: argparse.Namespace) -> int:
    from service.auth import new_token

    token, digest = new_token()
    entry = {"name": args.name}
    if args.tenant is not None:
        entry["tenant"] = args.tenant
    if args.role != "full":
        entry["role"] = args.role
    entry["sha256"] = digest
    print(f"token (give it to the client, once): {token}")
    print(f"configure (BRIDGE_AUTH__TOKENS):     [{json.dumps(entry)}]")
    return 0


def new_encryption_key(args: argparse.Namespace) -> int:
    from service.vault import new_key

    print(new_key())
    return 0


def build_parser() -> argparse.ArgumentParser:
    from service import check_upstream
    from service.devtools import fake_upstream, listener

    parser = argparse.ArgumentParser(
        prog="webhook-bridge",
        description="Polls an asynchronous job API and pushes each result as a signed webhook.",
    )
    parser.add_argument("--version", action="version", version=f"webhook-bridge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, run, text in (
        ("serve", serve, "run the bridge (HTTP API, poller, deliveries)"),
        ("migrate", migrate, "bring the store's schema up to date"),
        ("check-config", check_config, "print the effective configuration, secrets masked"),
    ):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument(
            "--config",
            type=Path,
            default=None,
            help=f"TOML file (default: ${config.CONFIG_PATH_VARIABLE} or "
            f"{config.DEFAULT_CONFIG_PATH})",
        )
        sub.set_defaults(run=run)
    token = commands.add_parser(
        "hash-token", help="make a new API token and the hashed form to configure"
    )
    token.add_argument(
        "--name", default="default", help="the token's name (its tenant unless --tenant)"
    )
    token.add_argument("--tenant", default=None, help="the tenant whose watches it reaches")
    token.add_argument(
        "--role", choices=["full", "viewer"], default="full",
        help="full: the whole API and dashboard; viewer: reads only",
    )  # fmt: skip
    token.set_defaults(run=hash_token)
    key = commands.add_parser(
        "new-encryption-key", help="print a new key for security.encryption_key"
    )
    key.set_defaults(run=new_encryption_key)
    # The commands whose module adds its own arguments.
    for name, module, text in (
        ("fake-upstream", fake_upstream,
         "run a simulator of the upstream API for trials and tests"),
        ("listen", listener, "receive, verify and print webhooks"),
        ("check-upstream", check_upstream,
         "ask an upstream for one job's status and show how its profile reads the answer"),
    ):  # fmt: skip
        sub = commands.add_parser(name, help=text)
        module.configure_parser(sub)
        sub.set_defaults(run=module.command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except BridgeError as error:
        print(f"webhook-bridge: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
