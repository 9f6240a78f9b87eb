"""End to end on loopback: a TLS SuperLink with node authentication and a registered SuperNode.

The certificates come from ``deploy/certs/make-certs.sh`` and the node key and settings from
``deploy/jetson/install-supernode.sh`` (into a DESTDIR), so the test exercises the deploy kit
itself. No ``--insecure`` anywhere. Every process started here, and every child they spawn
(``flower-superexec`` runs in its own session), is stopped by PID before the test ends.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.procs import BIN, Procs, alive, descendants, free_port

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.flower, pytest.mark.slow]


def run(args: list[str], env: dict[str, str], timeout: float = 60, check: bool = True) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args[0]} failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
    return proc.stdout


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


def test_tls_superlink_and_authenticated_supernode(tmp_path: Path, procs: Procs) -> None:
    certs = tmp_path / "certs"
    run(["bash", str(ROOT / "deploy/certs/make-certs.sh"), str(certs)], {**procs.env, "KEY_BITS": "2048"})
    ca = certs / "ca.crt"
    assert (certs / "superlink.key").stat().st_mode & 0o077 == 0

    link_port, node_port, rogue_port, wrong_port = free_port(), free_port(), free_port(), free_port()
    superlink = procs.start("superlink", [
        str(BIN / "flower-superlink"), "--ssl-ca-certfile", str(ca),
        "--ssl-certfile", str(certs / "superlink.crt"), "--ssl-keyfile", str(certs / "superlink.key"),
        "--enable-supernode-auth", "--disable-runtime-dependency-installation",
        "--database", str(tmp_path / "superlink.db"), "--host", "127.0.0.1", "--port", str(link_port)])
    with wait_for_tls(link_port, ca) as tls:
        assert tls.version() in {"TLSv1.2", "TLSv1.3"}
        cert: Any = tls.getpeercert()
        subject = {key: value for rdn in cert["subject"] for key, value in rdn}
        assert subject["commonName"] == "powerfleet SuperLink"
    with socket.create_connection(("127.0.0.1", link_port), timeout=5) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        plain.settimeout(5)
        try:
            reply = plain.recv(64)
        except (ConnectionResetError, TimeoutError):
            reply = b""
        assert not reply.startswith(b"HTTP/")  # no plaintext service on the port

    # The board side, as the installer sets it up (key pair, CA copy, settings).
    board = tmp_path / "board"
    run(["bash", str(ROOT / "deploy/jetson/install-supernode.sh"), "--superlink", f"127.0.0.1:{link_port}",
         "--ca", str(ca), "--unit", "3", "--runtime-port", str(node_port), "--no-venv"],
        {**procs.env, "DESTDIR": str(board)})
    settings = read_environment_file(board / "etc/powerfleet/supernode.env")
    key = board / settings["POWERFLEET_NODE_KEY"].lstrip("/")

    flwr_home = Path(procs.env["FLWR_HOME"])
    flwr_home.mkdir(exist_ok=True)
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "fleet"\n\n[superlink.fleet]\naddress = "127.0.0.1:{link_port}"\n'
        f'root-certificates = "{ca}"\n')
    flwr = str(BIN / "flwr")
    registered = json.loads(run([flwr, "supernode", "register", f"{key}.pub", "fleet", "--name",
                                 "jetson-unit-3", "--format", "json"], procs.env))
    assert registered["success"] is True
    node_id = str(registered["node-id"])

    supernode = procs.start("supernode", [
        str(BIN / "flower-supernode"), "--superlink", settings["POWERFLEET_SUPERLINK"],
        "--root-certificates", str(board / settings["POWERFLEET_CA"].lstrip("/")),
        "--auth-supernode-private-key", str(key), "--node-config", settings["POWERFLEET_NODE_CONFIG"],
        "--host", "127.0.0.1", "--port", settings["POWERFLEET_RUNTIME_PORT"]])

    # Two boards that must be turned away, started while we wait for the good one.
    rogue_key = tmp_path / "rogue"
    run(["ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-f", str(rogue_key)], procs.env)
    rogue = procs.start("rogue", [
        str(BIN / "flower-supernode"), "--superlink", f"127.0.0.1:{link_port}", "--root-certificates",
        str(ca), "--auth-supernode-private-key", str(rogue_key), "--max-retries", "1",
        "--host", "127.0.0.1", "--port", str(rogue_port)])
    other = tmp_path / "other"
    run(["bash", str(ROOT / "deploy/certs/make-certs.sh"), str(other)], {**procs.env, "KEY_BITS": "2048"})
    wrong_ca = procs.start("wrong-ca", [
        str(BIN / "flower-supernode"), "--superlink", f"127.0.0.1:{link_port}", "--root-certificates",
        str(other / "ca.crt"), "--auth-supernode-private-key", str(key), "--max-retries", "1",
        "--host", "127.0.0.1", "--port", str(wrong_port)])

    status = ""
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        listed = json.loads(run([flwr, "supernode", "ls", "fleet", "--format", "json"], procs.env))
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
    listed = json.loads(run([flwr, "supernode", "ls", "fleet", "--format", "json"], procs.env))
    assert [n["node-id"] for n in listed["nodes"]] == [node_id]  # the rogue key never got in

    children = descendants(superlink.pid) + descendants(supernode.pid)
    assert any("superexec" in Path(f"/proc/{p}/cmdline").read_text() for p in children if alive(p))
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
