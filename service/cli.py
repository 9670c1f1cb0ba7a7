"""The `webhook-bridge` command: serve, migrate, check-config, fake-upstream, listen."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from service import __version__, config
from service.errors import BridgeError


def _settings(args: argparse.Namespace) -> config.Settings:
    return config.load(args.config)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service import logs
    from service.app import create_app

    _Server = _server_class()
    settings = _settings(args)
    logs.configure(settings.log)
    # Open the store once before serving, so a locked or broken store fails start-up with one
    # clear line instead of a lifespan traceback.
    asyncio.run(_check_store(settings))
    server = _Server(
        uvicorn.Config(
            create_app(settings),
            host=settings.server.host,
            port=settings.server.port,
            log_level="warning",
            access_log=False,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            timeout_graceful_shutdown=int(settings.server.shutdown_grace_s) or 1,
        )
    )
    server.run()
    return 0 if server.started else 1


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """Exits 0 after a graceful stop on SIGTERM or SIGINT. uvicorn re-raises the signal
        once stopped, which supervisors and Kubernetes would read as a crash."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

    return Server


async def _check_store(settings: config.Settings) -> None:
    from service import store

    backend = store.from_settings(settings.store)
    await backend.open()
    await backend.close()


def migrate(args: argparse.Namespace) -> int:
    from service import store

    async def run() -> list[int]:
        backend = store.from_settings(_settings(args).store)
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
    print(json.dumps(config.masked(_settings(args)), indent=2))
    return 0


def hash_token(args: argparse.Namespace) -> int:
    from service.auth import new_token

    token, digest = new_token()
    print(f"token (give it to the client, once): {token}")
    print(f'configure (BRIDGE_AUTH__TOKENS):     [{{"name": "{args.name}", "sha256": "{digest}"}}]')
    return 0


def build_parser() -> argparse.ArgumentParser:
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
    token.add_argument("--name", default="default", help="the tenant the token stands for")
    token.set_defaults(run=hash_token)
    fake = commands.add_parser(
        "fake-upstream", help="run a simulator of the upstream API for trials and tests"
    )
    fake_upstream.configure_parser(fake)
    fake.set_defaults(run=fake_upstream.command)
    listen = commands.add_parser("listen", help="receive, verify and print webhooks")
    listener.configure_parser(listen)
    listen.set_defaults(run=listener.command)
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
