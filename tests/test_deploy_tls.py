"""End to end on loopback: the compose SuperLink, split into a fleet and an operator listener.

The SuperLink is started with the command line ``deploy/coordinator/compose.yaml`` gives it
(``split_superlink.py`` and its Flower arguments), its container paths mapped to local files
and its two ports to free loopback ports. Certificates come from ``deploy/certs/make-certs.sh``,
the SuperExec secret from ``deploy/coordinator/make-secrets.sh``, the node key and settings from
``deploy/jetson/install-supernode.sh`` (into a DESTDIR), so the test exercises the deploy kit
itself, with TLS and SuperNode authentication and no ``--insecure`` anywhere.

It shows the registration hole closed: a client holding only ``ca.crt`` and the boards' address
can neither register a node nor start a run, while the operator (through the operator listener,
which compose publishes on the host's loopback only) registers the board, whose SuperNode comes
online through the fleet listener. Every process started here, and every child they spawn, is
stopped by PID before the test ends.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships with flwr; no stubs installed

from tests.procs import BIN, Procs, alive, descendants, free_port

ROOT = Path(__file__).resolve().parents[1]
COORDINATOR = ROOT / "deploy/coordinator"
pytestmark = [pytest.mark.flower, pytest.mark.slow]


def run(args: list[str], env: dict[str, str], timeout: float = 60, check: bool = True) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args[0]} failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
    return proc.stdout


def refused(args: list[str], env: dict[str, str]) -> str:
    """Run a ``flwr`` command that must fail; return its output."""
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def wait_for_tls(port: int, ca: Path, timeout_s: float = 40) -> ssl.SSLSocket:
    """Handshake with the SuperLink, verifying its certificate against our CA and 127.0.0.1."""
    context = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            raw = socket.create_connection(("127.0.0.1", port), timeout=2)
            return context.wrap_socket(raw, server_hostname="127.0.0.1")
        except (ConnectionRefusedError, ssl.SSLError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def post_status(port: int, ca: Path, path: str) -> int:
    """HTTP status of an empty POST to ``path`` over TLS."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10,
                                       context=ssl.create_default_context(cafile=str(ca)))
    try:
        conn.request("POST", path, body=b"", headers={"content-type": "application/protobuf"})
        return conn.getresponse().status
    finally:
        conn.close()


def compose_superlink_command(tmp_path: Path, certs: Path, secrets: Path, fleet_port: int,
                              operator_port: int) -> list[str]:
    """The compose SuperLink's entrypoint and command, mapped to local files and loopback ports.

    Mounts and secrets are resolved as compose would: ``./certs/...`` and ``./secrets/...`` to
    the directories made here, other ``./...`` sources to the repository, named volumes to temp
    directories. Only the bind addresses (0.0.0.0 in a container) and the port numbers change.
    """
    spec = yaml.safe_load((COORDINATOR / "compose.yaml").read_text())
    service = spec["services"]["superlink"]

    def source(text: str) -> Path:
        if text.startswith("./certs/"):
            return certs / text.removeprefix("./certs/")
        if text.startswith("./secrets/"):
            return secrets / text.removeprefix("./secrets/")
        if text.startswith("./"):
            return COORDINATOR / text
        volume = tmp_path / "volumes" / text
        volume.mkdir(parents=True, exist_ok=True)
        return volume

    mounts: dict[str, Path] = {}
    for entry in service["volumes"]:
        src, target = entry.split(":")[:2]
        mounts[target] = source(src)
    for name in service.get("secrets", []):
        mounts[f"/run/secrets/{name}"] = source(spec["secrets"][name]["file"])

    def local(arg: str) -> str:
        for target, path in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
            if target in arg:
                return arg.replace(target, str(path))
        return arg

    replace = {"--fleet-host=0.0.0.0": "--fleet-host=127.0.0.1", "--fleet-port=8000": f"--fleet-port={fleet_port}",
               "--host=0.0.0.0": "--host=127.0.0.1", "--port=9093": f"--port={operator_port}"}
    command = [replace.get(arg, arg) for arg in service["command"]]
    assert set(replace.values()) <= set(command), "the compose SuperLink's listeners changed"
    entrypoint = list(service["entrypoint"])
    assert entrypoint[0] == "python"
    return [sys.executable, *[local(a) for a in entrypoint[1:]], *[local(a) for a in command]]


def flwr_config(home: Path, name: str, port: int, ca: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\naddress = "127.0.0.1:{port}"\n'
        f'root-certificates = "{ca}"\n')


def test_split_superlink_closes_registration_to_the_boards_port(tmp_path: Path, procs: Procs) -> None:
    certs, secrets = tmp_path / "certs", tmp_path / "secrets"
    run(["bash", str(ROOT / "deploy/certs/make-certs.sh"), str(certs)], {**procs.env, "KEY_BITS": "2048"})
    run(["bash", str(COORDINATOR / "make-secrets.sh"), str(secrets)], procs.env)
    ca = certs / "ca.crt"
    assert (certs / "superlink.key").stat().st_mode & 0o077 == 0

    fleet_port, operator_port = free_port(), free_port()
    node_port, rogue_port, wrong_port = free_port(), free_port(), free_port()
    superlink = procs.start("superlink", compose_superlink_command(tmp_path, certs, secrets, fleet_port,
                                                                   operator_port))
    for port in (fleet_port, operator_port):
        with wait_for_tls(port, ca) as tls:
            assert tls.version() in {"TLSv1.2", "TLSv1.3"}
            cert: Any = tls.getpeercert()
            subject = {key: value for rdn in cert["subject"] for key, value in rdn}
            assert subject["commonName"] == "powerfleet SuperLink"
    with socket.create_connection(("127.0.0.1", fleet_port), timeout=5) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        plain.settimeout(5)
        try:
            reply = plain.recv(64)
        except (ConnectionResetError, TimeoutError):
            reply = b""
        assert not reply.startswith(b"HTTP/")  # no plaintext service on the port

    # The boards' listener answers the Fleet API only; Control and Runtime are not there at all.
    for path in ("/v1/control/register-node", "/v1/control/start-run", "/v1/control/list-nodes",
                 "/v1/runtime/acquire-task", "/v1/fleet/../control/list-nodes", "/docs"):
        assert post_status(fleet_port, ca, path) == 404, path
    assert post_status(fleet_port, ca, "/v1/fleet/pull-messages") != 404
    assert post_status(operator_port, ca, "/v1/control/list-nodes") != 404
    assert post_status(operator_port, ca, "/v1/runtime/acquire-task") != 404

    # The board side, as the installer sets it up (key pair, CA copy, settings): the fleet port.
    board = tmp_path / "board"
    run(["bash", str(ROOT / "deploy/jetson/install-supernode.sh"), "--superlink", f"127.0.0.1:{fleet_port}",
         "--ca", str(ca), "--unit", "3", "--num-partitions", "4", "--runtime-port", str(node_port), "--no-venv"],
        {**procs.env, "DESTDIR": str(board)})
    settings = read_environment_file(board / "etc/powerfleet/supernode.env")
    key = board / settings["POWERFLEET_NODE_KEY"].lstrip("/")
    flwr = str(BIN / "flwr")

    # An outsider with only ca.crt and the boards' address: no registration, no run.
    rogue_key = tmp_path / "rogue"
    run(["ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-f", str(rogue_key)], procs.env)
    outsider = {**procs.env, "FLWR_HOME": str(tmp_path / "outsider")}
    flwr_config(tmp_path / "outsider", "fleet", fleet_port, ca)
    out = refused([flwr, "supernode", "register", f"{rogue_key}.pub", "fleet", "--name", "rogue"], outsider)
    assert "404" in out and "register-node" in out
    out = refused([flwr, "run", str(ROOT), "fleet"], outsider)
    assert "404" in out and "start-run" in out
    refused([flwr, "supernode", "ls", "fleet"], outsider)
    refused([flwr, "ls", "fleet"], outsider)

    # The operator, through the operator listener (an SSH tunnel in production).
    operator = {**procs.env, "FLWR_HOME": str(tmp_path / "operator")}
    flwr_config(tmp_path / "operator", "fleet", operator_port, ca)
    registered = json.loads(run([flwr, "supernode", "register", f"{key}.pub", "fleet", "--name",
                                 "jetson-unit-3", "--format", "json"], operator))
    assert registered["success"] is True
    node_id = str(registered["node-id"])

    supernode = procs.start("supernode", [
        str(BIN / "flower-supernode"), "--superlink", settings["POWERFLEET_SUPERLINK"],
        "--root-certificates", str(board / settings["POWERFLEET_CA"].lstrip("/")),
        "--auth-supernode-private-key", str(key), "--node-config", settings["POWERFLEET_NODE_CONFIG"],
        "--host", "127.0.0.1", "--port", settings["POWERFLEET_RUNTIME_PORT"]])

    # Two boards that must be turned away, started while we wait for the good one.
    rogue = procs.start("rogue", [
        str(BIN / "flower-supernode"), "--superlink", f"127.0.0.1:{fleet_port}", "--root-certificates",
        str(ca), "--auth-supernode-private-key", str(rogue_key), "--max-retries", "1",
        "--host", "127.0.0.1", "--port", str(rogue_port)])
    other = tmp_path / "other"
    run(["bash", str(ROOT / "deploy/certs/make-certs.sh"), str(other)], {**procs.env, "KEY_BITS": "2048"})
    wrong_ca = procs.start("wrong-ca", [
        str(BIN / "flower-supernode"), "--superlink", f"127.0.0.1:{fleet_port}", "--root-certificates",
        str(other / "ca.crt"), "--auth-supernode-private-key", str(key), "--max-retries", "1",
        "--host", "127.0.0.1", "--port", str(wrong_port)])

    status = ""
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        listed = json.loads(run([flwr, "supernode", "ls", "fleet", "--format", "json"], operator))
        nodes = {n["node-id"]: n for n in listed["nodes"]}
        status = nodes.get(node_id, {}).get("status", "")
        if status == "online":
            break
        assert supernode.poll() is None, procs.log("supernode")
        time.sleep(1)
    assert status == "online", procs.log("supernode")
    assert f"SuperNode ID: {node_id}" in procs.log("supernode")
    assert superlink.poll() is None

    assert rogue.wait(timeout=40) != 0
    assert "Failed to activate SuperNode" in procs.log("rogue")
    assert wrong_ca.wait(timeout=40) != 0
    assert "CERTIFICATE_VERIFY_FAILED" in procs.log("wrong-ca")

    # The operator can start a run; the outsider's never existed, its key never got in.
    started = json.loads(run([flwr, "run", str(ROOT), "fleet", "--format", "json"], operator, timeout=120))
    assert started["success"] is True, started
    runs = json.loads(run([flwr, "ls", "fleet", "--format", "json"], operator))["runs"]
    assert [r["run-id"] for r in runs] == [started["run-id"]]
    listed = json.loads(run([flwr, "supernode", "ls", "fleet", "--format", "json"], operator))
    assert [n["node-id"] for n in listed["nodes"]] == [node_id]

    children = descendants(superlink.pid) + descendants(supernode.pid)
    pids = procs.stop_all()
    assert set(children) <= set(pids)
    assert not [p for p in pids if alive(p)]


def read_environment_file(path: Path) -> dict[str, str]:
    """Parse a systemd EnvironmentFile (KEY=value, double quotes with backslash escapes)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        if value.startswith('"') and value.endswith('"'):
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        values[key] = value
    return values
