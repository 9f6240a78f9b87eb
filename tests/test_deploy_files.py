"""The deploy kit's files: compose structure, env template, systemd unit, installer, cert script.

Docker and systemd are not available here, so the compose file and unit are checked
structurally (every variable they use is defined, nothing insecure, nothing exposed beyond
the SuperLink port); the scripts run for real.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships with flwr; no stubs installed
from flwr.common.config import parse_config_args

from tests.test_deploy_tls import read_environment_file

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((DEPLOY / "coordinator/compose.yaml").read_text())  # type: ignore[no-any-return]


def test_compose_services_and_exposure() -> None:
    spec = compose()
    assert set(spec["services"]) == {"superlink", "serverapp", "redis"}
    link, app, redis = (spec["services"][n] for n in ("superlink", "serverapp", "redis"))
    args = link["command"]
    assert not any("insecure" in a for a in args + app["command"])
    for flag in ("--ssl-ca-certfile=", "--ssl-certfile=", "--ssl-keyfile=", "--database=",
                 "--superexec-auth-secret-file="):
        assert any(a.startswith(flag) for a in args), flag
    assert "--enable-supernode-auth" in args and "--disable-runtime-dependency-installation" in args
    assert "--isolation=process" in args
    # only the SuperLink publishes a port; Redis is on an internal network only
    assert [s for s, v in spec["services"].items() if "ports" in v] == ["superlink"]
    assert redis["networks"] == ["backend"] and spec["networks"]["backend"]["internal"] is True
    assert set(app["networks"]) == {"fleet", "backend"}
    # persistence on
    assert "--appendonly yes" in redis["command"][0] and "redis-data:/data" in redis["volumes"]
    assert any(v.startswith("superlink-state:") for v in link["volumes"])
    db = next(a for a in args if a.startswith("--database=")).split("=", 1)[1]
    assert any(db.startswith(v.split(":")[1]) for v in link["volumes"] if v.startswith("superlink-state:"))
    # the password is required, reaches Redis via a config file, and the ServerApp via REDIS_URL
    assert "${REDIS_PASSWORD:?" in redis["environment"]["REDIS_PASSWORD"]
    assert "requirepass" in redis["command"][0]
    assert "REDIS_PASSWORD" not in redis["command"][0].split("exec redis-server", 1)[1]  # not in argv
    assert app["environment"]["REDIS_URL"].startswith("redis://:${REDIS_PASSWORD:?")
    assert app["depends_on"]["redis"]["condition"] == "service_healthy"
    # the certificate files mounted are the ones make-certs.sh writes
    mounted = {Path(v.split(":")[0]).name for v in link["volumes"] if v.startswith("./certs/")}
    assert mounted == {"ca.crt", "superlink.crt", "superlink.key"}
    assert app["build"]["dockerfile"] == "deploy/coordinator/Dockerfile"
    assert (DEPLOY / "coordinator/Dockerfile").exists()


def test_env_template_defines_every_compose_variable() -> None:
    text = (DEPLOY / "coordinator/compose.yaml").read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)", text))
    defined = set(re.findall(r"^([A-Z_]+)=", (DEPLOY / "coordinator/env.example").read_text(), re.M))
    assert used == defined
    assert re.search(r"^REDIS_PASSWORD=$", (DEPLOY / "coordinator/env.example").read_text(), re.M)


def _unit() -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current = ""
    text = (DEPLOY / "jetson/powerfleet-supernode.service").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = {}
        else:
            key, _, value = line.partition("=")
            sections[current].setdefault(key, value)
    return sections


def test_systemd_unit() -> None:
    unit = _unit()
    service = unit["Service"]
    assert service["Restart"] == "always" and int(service["RestartSec"]) > 0
    assert service["KillMode"] == "control-group" and service["User"] == "root"
    assert "ProtectKernelTunables" not in service  # /sys must stay writable
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "network-online.target" in unit["Unit"]["After"]
    exec_start = service["ExecStart"]
    assert "--insecure" not in exec_start and "--root-certificates" in exec_start
    assert "--auth-supernode-private-key" in exec_start and "--node-config" in exec_start
    used = set(re.findall(r"\$\{([A-Z_]+)\}", exec_start))
    template = (DEPLOY / "jetson/supernode.env.template").read_text()
    assert used == set(re.findall(r"^([A-Z_]+)=", template, re.M))


def _install(tmp_path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["bash", str(DEPLOY / "jetson/install-supernode.sh"), *args], capture_output=True,
                          text=True, env={"DESTDIR": str(tmp_path / "board"), "PATH": "/usr/bin:/bin"},
                          timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    subprocess.run(["bash", str(DEPLOY / "certs/make-certs.sh"), str(out), "DNS:coord.lan", "IP:10.1.2.3"],
                   check=True, capture_output=True, env={"KEY_BITS": "2048", "PATH": "/usr/bin:/bin"})
    return out / "ca.crt"


def test_installer_writes_settings_unit_and_key(tmp_path: Path, ca: Path) -> None:
    spec = "jetson:orin-agx?unit=7&power=ina3221"
    proc = _install(tmp_path, "--superlink", "coord.lan:8000", "--ca", str(ca), "--unit", "7",
                    "--device", spec, "--no-venv")
    board = tmp_path / "board"
    env = read_environment_file(board / "etc/powerfleet/supernode.env")
    assert env["POWERFLEET_SUPERLINK"] == "coord.lan:8000"
    assert parse_config_args([env["POWERFLEET_NODE_CONFIG"]]) == {"device": spec, "unit-id": 7}
    key = board / "etc/powerfleet/keys/supernode"
    public = key.with_suffix(".pub").read_text()
    assert key.stat().st_mode & 0o077 == 0 and public.startswith("ecdsa-sha2-nistp384")
    assert key.with_suffix(".pub").read_text().split()[1] in proc.stdout
    assert "flwr supernode register /etc/powerfleet/keys/supernode.pub" in proc.stdout
    unit = (board / "etc/systemd/system/powerfleet-supernode.service").read_text()
    assert "@" not in unit.replace("powerfleet-unit", "")  # every placeholder substituted
    assert "EnvironmentFile=/etc/powerfleet/supernode.env" in unit
    assert "ExecStart=/opt/powerfleet/venv/bin/flower-supernode" in unit
    assert (board / "etc/powerfleet/certs/ca.crt").read_bytes() == ca.read_bytes()
    # rerunning keeps the node key (it is registered on the SuperLink)
    before = key.read_bytes()
    _install(tmp_path, "--superlink", "coord.lan:9000", "--ca", str(ca), "--unit", "7", "--no-venv")
    assert key.read_bytes() == before
    env = read_environment_file(board / "etc/powerfleet/supernode.env")
    assert env["POWERFLEET_SUPERLINK"] == "coord.lan:9000"


@pytest.mark.parametrize(("args", "needle"), [
    (["--ca", "CA", "--unit", "1"], "--superlink HOST:PORT is required"),
    (["--superlink", "https://c:8000", "--ca", "CA", "--unit", "1"], "without a URL scheme"),
    (["--superlink", "c:8000", "--ca", "/nonexistent", "--unit", "1"], "--ca must name"),
    (["--superlink", "c:8000", "--ca", "CA", "--unit", "x"], "--unit must be"),
    (["--superlink", "c:8000", "--ca", "CA", "--unit", "1", "--frobnicate"], "unknown option"),
])
def test_installer_rejects_bad_arguments(tmp_path: Path, ca: Path, args: list[str], needle: str) -> None:
    proc = _install(tmp_path, *[str(ca) if a == "CA" else a for a in args], "--no-venv", check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and needle in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert not (tmp_path / "board").exists()


def test_make_certs(tmp_path: Path) -> None:
    env = {"KEY_BITS": "2048", "PATH": "/usr/bin:/bin"}
    script = str(DEPLOY / "certs/make-certs.sh")
    subprocess.run(["bash", script, str(tmp_path), "DNS:coord.lan", "IP:10.1.2.3"], check=True,
                   capture_output=True, env=env)
    sans = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "superlink.crt"), "-noout", "-ext",
                           "subjectAltName"], capture_output=True, text=True, check=True).stdout
    for name in ("DNS:superlink", "DNS:localhost", "IP Address:127.0.0.1", "DNS:coord.lan",
                 "IP Address:10.1.2.3"):
        assert name in sans
    ca_before = (tmp_path / "ca.crt").read_bytes()
    subprocess.run(["bash", script, str(tmp_path)], check=True, capture_output=True, env=env)
    assert (tmp_path / "ca.crt").read_bytes() == ca_before  # rotation keeps the CA the boards trust
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "ca.crt"),
                             str(tmp_path / "superlink.crt")], capture_output=True, text=True)
    assert verify.returncode == 0
    bad = subprocess.run(["bash", script, str(tmp_path), "coord.lan"], capture_output=True, text=True,
                         env=env)
    assert bad.returncode == 2 and "must look like DNS:name or IP:address" in bad.stderr
