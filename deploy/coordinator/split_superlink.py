"""``flower-superlink`` with the boards' Fleet API on a listener of its own.

Flower 1.42 serves the Fleet, Control and Runtime APIs of the SuperLink from one HTTP server
on one port (``--host``/``--port``; ``--fleet-api-address`` and ``--control-api-address`` are
deprecated no-ops), and the Control API has no authentication without Flower Enterprise. So
whoever reaches the boards' port could register SuperNodes and start runs. This launcher runs
the same SuperLink (Flower's own app, state and lifespan, unchanged) on two listeners:

* the **operator listener** (``--host``/``--port``): every API. Bind it to loopback or an
  unpublished port; the operator reaches it through an SSH tunnel, the ServerApp runtime over
  the internal network.
* the **fleet listener** (``--fleet-host``/``--fleet-port``): only the exact paths of Flower's
  Fleet router and ``/health``; anything else is answered 404 before it reaches Flower.

Both listeners use the same TLS files. Every other argument is ``flower-superlink``'s::

    python split_superlink.py --fleet-host 0.0.0.0 --fleet-port 8000 \\
        --host 0.0.0.0 --port 9093 --ssl-ca-certfile ca.crt ... --enable-supernode-auth

Built on Flower internals (``_parse_superlink_lifespan_config``, ``create_app``); the project
pins ``flwr==1.42.*`` and ``tests/test_deploy_split.py`` runs this file for real.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, NoReturn

import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Paths the fleet listener serves besides the Fleet router's.
EXTRA_FLEET_PATHS = frozenset({"/health"})


def fail(message: str) -> NoReturn:
    """One error line on stderr and exit 2 (bad arguments, a port that cannot be bound)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line, without the usage block."""

    def error(self, message: str) -> NoReturn:
        fail(message)


def fleet_paths() -> frozenset[str]:
    """The exact request paths of Flower's Fleet API (``/v1/fleet/...``) plus ``/health``."""
    from flwr.superlink.routers.fleet.router import router

    paths = {str(getattr(route, "path", "")) for route in router.routes}
    paths.discard("")
    if not paths or not all(p.startswith("/v1/fleet/") for p in paths):
        fail(f"unexpected Fleet API routes in this flwr version: {sorted(paths)}")
    return frozenset(paths) | EXTRA_FLEET_PATHS


class FleetOnly:
    """ASGI gate: pass HTTP requests whose path is one of ``allowed``; 404 everything else.

    The match is exact on the decoded path Starlette routes on (no prefixes, so neither
    ``/v1/fleet/../control/...`` nor ``/v1/control/...`` can reach another router), and the
    root path must be empty. WebSocket and any other scope types are refused.
    """

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path") and scope.get("path") in self.allowed:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            return
        body = b"not found: this port serves the Fleet API only\n"
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _SharedLifespan:
    """The fleet listener's lifespan: nothing of its own, the operator server's state."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        self.should_exit = False

    async def startup(self) -> None:
        """Nothing to start: the operator server ran Flower's lifespan."""

    async def shutdown(self) -> None:
        """Nothing to stop."""


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to :func:`serve` (two servers, one loop)."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int, what: str) -> socket.socket:
    """A listening socket, or one error line and exit 2 (nothing else is started)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        fail(f"{what} {host}:{port} cannot be bound: {exc.strerror or exc}")
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


async def serve(operator: uvicorn.Config, fleet: uvicorn.Config,
                sockets: tuple[socket.socket, socket.socket]) -> bool:
    """Run both listeners until SIGTERM/SIGINT or until either stops; False if start-up failed."""
    servers = (_Server(operator), _Server(fleet))

    def stop(*_: object) -> None:
        for server in servers:
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)

    async def run(server: _Server, sock: socket.socket) -> None:
        try:
            await server.serve(sockets=[sock])
        finally:
            stop()

    # The operator server owns Flower's lifespan (state, SuperExec start-up): start it first,
    # then the fleet listener with the same lifespan state.
    operator_task = asyncio.create_task(run(servers[0], sockets[0]))
    while not servers[0].started and not operator_task.done():
        await asyncio.sleep(0.05)
    if operator_task.done():
        await operator_task
        return False
    fleet.load()
    state = servers[0].lifespan.state
    fleet.lifespan_class = lambda _config: _SharedLifespan(state)
    await asyncio.gather(operator_task, run(servers[1], sockets[1]))
    return servers[1].started


def main(argv: list[str] | None = None) -> None:
    """Parse our two options, hand the rest to Flower's parser, serve both listeners."""
    parser = _Parser(add_help=False)
    parser.add_argument("--fleet-host", required=True, help="address of the boards' listener")
    parser.add_argument("--fleet-port", type=int, required=True, help="port of the boards' listener")
    ours, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if not 0 < ours.fleet_port < 65536:
        fail(f"--fleet-port {ours.fleet_port} must be 1..65535")

    from flwr.supercore.http_logging import get_uvicorn_log_config
    from flwr.supercore.logger import console_handler
    from flwr.superlink.main import create_app

    # The module, not the function of the same name that the package exports.
    fs = importlib.import_module("flwr.superlink.cli.flower_superlink")

    flower_parser = fs._parse_args_run_superlink()
    flower_parser.error = fail  # Flower's own arguments, also reported in one line
    flower_parser.parse_args(rest)
    sys.argv = [sys.argv[0], *rest]
    config = fs._parse_superlink_lifespan_config()
    if (config.host, config.port) == (ours.fleet_host, ours.fleet_port):
        fail("--fleet-host/--fleet-port must differ from --host/--port (the operator listener)")
    allowed = fleet_paths()
    sockets = (_bind(config.host, config.port, "operator listener --host/--port"),
               _bind(ours.fleet_host, ours.fleet_port, "fleet listener --fleet-host/--fleet-port"))
    app = create_app(config, fs.SuperLinkLifespan)
    common: dict[str, Any] = {"log_config": get_uvicorn_log_config(console_handler.level), "access_log": True,
                              "ssl_keyfile": config.ssl_keyfile, "ssl_certfile": config.ssl_certfile}
    operator = uvicorn.Config(app, host=config.host, port=config.port, **common)
    fleet = uvicorn.Config(FleetOnly(app, allowed), host=ours.fleet_host, port=ours.fleet_port,
                           ws="none", **common)
    scheme = "http" if config.insecure else "https"
    print(f"split SuperLink: operator listener (Control, Runtime, Fleet) {scheme}://{config.host}:{config.port}; "
          f"fleet listener (Fleet API only) {scheme}://{ours.fleet_host}:{ours.fleet_port}", file=sys.stderr)
    if not asyncio.run(serve(operator, fleet, sockets)):
        print("error: the SuperLink did not start; see the log above", file=sys.stderr)
        raise SystemExit(3)  # uvicorn's start-up failure code


if __name__ == "__main__":
    main()
