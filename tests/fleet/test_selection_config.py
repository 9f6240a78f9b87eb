"""Deadline-aware selection, the run config, fleet files and bad input before any round."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from coordinator.config import RunConfig
from coordinator.fleet import FleetSpec
from coordinator.selection import AllSelection, DeadlineAwareSelection, SelectionInput
from powerfleet.protocol.enums import Policy
from powerfleet.protocol.messages import NodeInfo
from powerfleet.sim.engines import check_fleet
from powertrain.devices import SimulatedJetson
from powertrain.errors import DataFormatError, InvalidParameterError, UnknownNameError
from tests.fleet.test_policies import exact_table


def _nodes() -> list[NodeInfo]:
    return [NodeInfo(node_id=i, device_type=t, unit=i, device_spec=f"sim:{t}", partition_id=i, predictor_id="",
                     available=True) for i, t in
            enumerate(["orin-agx", "orin-agx", "orin-nano", "xavier-agx"], start=1)]


def test_deadline_aware_selection_skips_and_gives_partial_work() -> None:
    tables = {t: exact_table(SimulatedJetson(t), "resnet18-imagenet") for t in ("orin-agx", "orin-nano",
                                                                                "xavier-agx")}
    caps = {"orin-agx": 25.0, "orin-nano": 25.0, "xavier-agx": 25.0}
    deadline_s, local, least = 9.5, 50, 30
    fits = {}
    for t, table in tables.items():
        t_up, p_up = table.upper(1.0)
        fits[t] = int(deadline_s * 1000 // t_up[p_up <= caps[t]].min())
    # the scenario covers every outcome: Orin AGX full, Xavier partial, Orin Nano skipped
    assert fits["orin-agx"] >= local and least <= fits["xavier-agx"] < local and fits["orin-nano"] < least
    per_node = {n.node_id: caps[n.device_type] for n in _nodes()}
    inp = SelectionInput(_nodes(), tables, per_node, deadline_s, local, least, 1.0, 1.0)
    chosen, skipped = DeadlineAwareSelection().select(inp, np.random.default_rng(0))
    by_node = {a.node_id: a for a in chosen}
    assert by_node[1].work == by_node[2].work == local and by_node[1].reason == "full"
    assert by_node[4].work == fits["xavier-agx"] and by_node[4].reason.startswith("partial")
    assert [s.node_id for s in skipped] == [3] and "minibatches fit" in skipped[0].reason
    # a tight cap leaves the Orin AGX too slow as well
    tight = SelectionInput(_nodes(), tables, {**per_node, 1: 8.0, 2: 8.0}, deadline_s, local, least, 1.0, 1.0)
    chosen, skipped = DeadlineAwareSelection().select(tight, np.random.default_rng(0))
    assert {s.node_id for s in skipped} >= {1, 2, 3}
    # caps are per board: one Orin AGX capped tightly is skipped, the other keeps its full work
    mixed = SelectionInput(_nodes(), tables, {**per_node, 2: 8.0}, deadline_s, local, least, 1.0, 1.0)
    chosen, skipped = DeadlineAwareSelection().select(mixed, np.random.default_rng(0))
    assert 2 in {s.node_id for s in skipped} and {a.node_id: a.work for a in chosen}[1] == local


def test_fraction_and_all_selection() -> None:
    inp = SelectionInput(_nodes(), {}, {n.node_id: 25.0 for n in _nodes()}, 10.0, 50, 20, 1.0, 0.5)
    chosen, skipped = AllSelection().select(inp, np.random.default_rng(0))
    assert len(chosen) == 2 and len(skipped) == 2 and all(a.work == 50 for a in chosen)
    assert all("not sampled" in s.reason for s in skipped)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"deadline-s": -1}, "deadline-s must be in (0"),
        ({"deadline-s": 0}, "deadline-s must be in (0"),
        ({"power-cap-w": 0}, "power-cap-w must be in (0"),
        ({"cost-as": "gpt"}, "cost-as 'gpt' is not known"),
        ({"task": "no-colon"}, "must look like package.module:ClassName"),
        ({"strategy": "fedsgd"}, "strategy 'fedsgd' is not known; valid names: fedavg, fedprox, fedadam"),
        ({"objective": "fast"}, "objective 'fast' is not known"),
        ({"policy": "greedy"}, "policy 'greedy' is not known"),
        ({"min-minibatches": 80}, "min-minibatches must be in [1, 50]"),
        ({"dropout-rate": 1.0}, "dropout-rate must be in [0, 1)"),
        ({"rounds": 3}, "run config key 'rounds' is not known"),
        ({"num-server-rounds": "many"}, "num-server-rounds='many' must be an integer"),
        ({"deadline-s": float("inf")}, "deadline-s must be in (0, 86400]; got inf"),
        ({"deadline-s": "soon"}, "deadline-s='soon' must be a number"),
        ({"deadline-s": True}, "deadline-s=True must be a number"),
        ({"num-server-rounds": False}, "num-server-rounds=False must be an integer"),
        ({"store": True}, "store=True must be a string"),
        ({"selection": "best"}, "selection 'best' is not known; valid names: deadline, all"),
        ({"reference-source": "web"}, "reference-source 'web' is not known; valid names: sim, store"),
        ({"min-available-nodes": 0}, "min-available-nodes must be in [1, 1e+06]; got 0"),
    ],
)
def test_run_config_errors(values: dict[str, object], message: str) -> None:
    with pytest.raises((InvalidParameterError, UnknownNameError)) as info:
        RunConfig.from_run_config(values)
    assert message in str(info.value)


def test_pyproject_app_config_is_the_run_config() -> None:
    """``[tool.flwr.app.config]`` holds exactly the RunConfig keys, with its defaults."""
    import tomllib

    app = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert app["config"] == RunConfig().to_run_config()
    assert RunConfig.from_run_config(app["config"]) == RunConfig()
    assert app["components"] == {"serverapp": "coordinator.server_app:app", "clientapp": "client.client_app:app"}


def test_run_config_round_trip() -> None:
    cfg = RunConfig(num_server_rounds=3, deadline_s=12.5, policy=Policy.MAXN)
    assert RunConfig.from_run_config(cfg.to_run_config()) == cfg


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ('name = "x"\n', DataFormatError, "no [[group]] of boards"),
        ("[[group]\n", DataFormatError, "malformed TOML"),
        ('[[group]]\ndevice = "sim:tx2"\n', UnknownNameError, "device 'tx2' is not known"),
        ('[[group]]\ndevice = "gpu:orin-agx"\n', UnknownNameError, "backend 'gpu' is not known"),
        ('[[group]]\ndevice = "sim:orin-agx"\ncount = 0\n', InvalidParameterError, "count=0"),
        ('[[group]]\ndevice = "sim:orin-agx"\ncolour = 1\n', DataFormatError, "unknown key 'colour'"),
    ],
)
def test_fleet_file_errors(tmp_path: Path, text: str, error: type[Exception], message: str) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    with pytest.raises(error) as info:
        FleetSpec.load(path)
    assert message in str(info.value)


def test_fleet_file_expands_units_and_caps(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text('seed = 7\n[[group]]\ndevice = "sim:orin-nano"\ncount = 2\nfirst_unit = 30\n'
                    '[[group]]\ndevice = "sim:orin-agx"\npower_cap_w = 30.0\n')
    fleet = FleetSpec.load(path)
    assert [n.device_spec for n in fleet.nodes] == ["sim:orin-nano?unit=30&seed=7", "sim:orin-nano?unit=31&seed=7",
                                                     "sim:orin-agx?unit=0&seed=7"]
    assert fleet.cap_for("orin-agx", 20.0) == 30.0 and fleet.cap_for("orin-nano", 20.0) == 20.0
    shipped = FleetSpec.load("mixed-12")
    assert [n.device_type for n in shipped.nodes].count("orin-nano") == 4 and len(shipped.nodes) == 12
    assert len({(n.device_type, n.unit) for n in shipped.nodes}) == 12


def test_cap_below_idle_power_is_refused_before_any_round() -> None:
    fleet = FleetSpec.uniform("sim:orin-nano", 2)
    with pytest.raises(InvalidParameterError, match=r"power-cap-w 3 W is below the idle power of orin-nano"):
        check_fleet(RunConfig(power_cap_w=3.0), fleet)
    check_fleet(RunConfig(power_cap_w=10.0), fleet)


def _one_line(code: int, err: str, *needles: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0]


def test_simulate_cli_bad_input(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "report"
    empty = tmp_path / "empty.toml"
    empty.write_text("# nothing\n")
    code, _, err = cli("simulate", "--fleet", str(empty), "--out", str(out))
    _one_line(code, err, "no [[group]]")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[group]\n")
    code, _, err = cli("simulate", "--fleet", str(bad), "--out", str(out))
    _one_line(code, err, "malformed TOML", "bad.toml")
    fleet = tmp_path / "ok.toml"
    fleet.write_text('[[group]]\ndevice = "sim:orin-nano"\n')
    code, _, err = cli("simulate", "--fleet", str(fleet), "--deadline-s", "-5", "--out", str(out))
    _one_line(code, err, "deadline-s must be in (0")
    code, _, err = cli("simulate", "--fleet", str(fleet), "--power-cap-w", "2", "--out", str(out))
    _one_line(code, err, "below the idle power of orin-nano")
    code, _, err = cli("simulate", "--fleet", str(fleet), "--cost-as", "gpt", "--out", str(out))
    _one_line(code, err, "cost-as 'gpt' is not known")
    code, _, err = cli("simulate", "--fleet", str(fleet), "--store", "redis://127.0.0.1:1/0", "--out", str(out))
    _one_line(code, err, "does not answer")
    assert not out.exists()


@pytest.mark.parametrize(
    ("run_config", "message"),
    [
        ("colour=1", "run config key 'colour' is not known; valid keys: num-server-rounds,"),
        ('num-server-rounds="many"', "run config num-server-rounds='many' must be an integer"),
        ("deadline-s=true", "run config deadline-s=True must be a number"),  # not 1.0 s
        ('store="redis://127.0.0.1:1/0"', "Redis store redis://127.0.0.1:1/0 does not answer"),
        ("num-server-rounds=", "'num-server-rounds=' is not one"),  # Flower's parser would drop it silently
        ("num-server-rounds=2 rounds", "'rounds' is not one"),
        ('task="unclosed', "must be space-separated key=value pairs"),
    ],
)
def test_simulate_run_config_bad_input(cli, tmp_path: Path, run_config: str,  # type: ignore[no-untyped-def]
                                       message: str) -> None:
    """``powerfleet simulate --run-config`` (Flower's syntax): one line, exit 2, nothing written."""
    out = tmp_path / "report"
    code, _, err = cli("simulate", "--engine", "analytic", "--run-config", run_config, "--out", str(out))
    _one_line(code, err, message)
    assert not out.exists()


def test_simulate_unreachable_store_from_the_environment(cli, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERFLEET_STORE", "redis://127.0.0.1:1/0")
    out = tmp_path / "report"
    code, _, err = cli("simulate", "--engine", "analytic", "--out", str(out))
    _one_line(code, err, "Redis store redis://127.0.0.1:1/0 does not answer")
    assert not out.exists()
