"""Device writes stay in the device tree, and the device tree is chosen locally.

* A symlink that leads out of the sysfs root is refused before anything is opened (reads,
  writes, existence checks), and the writer never follows a symlink at the last component.
* A node takes a real board (and its ``root=``) only from its own node config: a ``jetson:``
  spec in the fleet list the coordinator broadcasts is refused; ``sim:`` specs are still taken
  (the simulated fleet's virtual SuperNodes have no node config of their own).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import pytest
from flwr.app import Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client.client_app import app, node_device_spec
from powerfleet.protocol import messages as protocol
from powertrain.devices.jetson.sysfs import Sysfs, default_writer
from powertrain.errors import DeviceError, InvalidParameterError
from tests.jetson.fake_tree import BOARDS, CPU, build_tree

Cli = Callable[..., tuple[int, str, str]]


def test_symlink_out_of_the_tree_is_refused_by_device_set(cli: Cli, tmp_path: Path) -> None:
    """The issue's case: cpu11/online -> a file outside the tree; `set cpu_cores=12` must not write it."""
    board = build_tree(tmp_path / "tree", BOARDS["orin-agx-jp6"])
    code, _, stderr = cli("device", "set", "MODE_15W", "--sysfs-root", str(board.root))  # cores 4..11 off
    assert code == 0, stderr
    outside = tmp_path / "outside"
    outside.write_text("0\n")
    online = board.root / f"{CPU}/cpu11/online".lstrip("/")
    online.unlink()
    online.symlink_to(outside)
    before = board.snapshot()

    code, stdout, stderr = cli("device", "set", "cpu_cores=12", "--sysfs-root", str(board.root))
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and stdout == "" and len(lines) == 1 and "Traceback" not in stderr
    assert lines[0].startswith("error: ") and "cpu11/online" in lines[0]
    assert "outside the device tree" in lines[0]
    assert outside.read_text() == "0\n"  # never written
    assert board.snapshot() == before  # nothing else either


def test_reads_and_writes_through_a_directory_symlink_out_are_refused(tmp_path: Path) -> None:
    board = build_tree(tmp_path / "tree", BOARDS["orin-nano"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "max_freq").write_text("secret\n")
    gpu = board.root / board.spec.gpu_dir.lstrip("/")
    for item in gpu.iterdir():
        item.unlink()
    gpu.rmdir()
    gpu.symlink_to(elsewhere, target_is_directory=True)
    fs = Sysfs(board.root)
    kernel_path = f"{board.spec.gpu_dir}/max_freq"
    for action in (lambda: fs.write(kernel_path, 1), lambda: fs.read(kernel_path),
                   lambda: fs.check_writable(kernel_path), lambda: fs.exists(kernel_path)):
        with pytest.raises(DeviceError, match="outside the device tree"):
            action()
    assert fs.try_read(kernel_path) is None  # never the outside file's contents
    assert (elsewhere / "max_freq").read_text() == "secret\n" and fs.writes == []


def test_symlinks_inside_the_tree_still_resolve(tmp_path: Path) -> None:
    """Real sysfs is full of links (cpuN/cpufreq, /sys/class/devfreq): inside the root they work."""
    board = build_tree(tmp_path / "tree", BOARDS["orin-agx-jp6"])
    fs = Sysfs(board.root)
    assert board.spec.gpu_alias is not None
    assert fs.read(f"{board.spec.gpu_alias}/max_freq") == fs.read(f"{board.spec.gpu_dir}/max_freq")
    fs.write(f"{CPU}/cpu0/cpufreq/scaling_max_freq", 1113600)
    assert fs.read(f"{CPU}/cpufreq/policy0/scaling_max_freq") == "1113600"


def test_the_writer_does_not_follow_a_symlink_at_the_last_component(tmp_path: Path) -> None:
    """A link swapped in after the check (a race) is refused by O_NOFOLLOW, not followed."""
    target = tmp_path / "target"
    target.write_text("0\n")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(OSError) as info:
        default_writer(link, "1")
    assert info.value.errno == errno.ELOOP
    assert target.read_text() == "0\n"


@pytest.fixture()
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower builds reply messages from the identity of the running task; give it one."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 7)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def test_the_coordinator_cannot_give_a_node_a_device_tree(tmp_path: Path, task_identity: None) -> None:
    """A query whose fleet list names `jetson:...?root=` is refused by the real ClientApp handler."""
    evil = build_tree(tmp_path / "evil", BOARDS["orin-agx-jp5"])
    before = evil.snapshot()
    query = protocol.NodeQuery(round=1, task="powerfleet.tasks.digits:Digits",
                               fleet=(f"jetson:auto?root={evil.root}&power=none",))
    context = Context(run_id=1, node_id=7, node_config={"partition-id": 0, "num-partitions": 1},
                      state=RecordDict(), run_config={})
    with pytest.raises(DeviceError) as info:
        app(Message(protocol.query_to_records(query), dst_node_id=7, message_type="query"), context)
    message = str(info.value)
    assert "\n" not in message and "refuses device" in message and "node_config" in message
    assert evil.snapshot() == before and not context.state.config_records  # nothing opened or kept


@pytest.mark.parametrize(("node_config", "fleet", "expected"), [
    # the node's own config wins; a root= in the broadcast is ignored
    ({"device": "jetson:auto?root=/srv/mine"}, ("jetson:auto?root=/tmp/theirs",), "jetson:auto?root=/srv/mine"),
    ({"device": "sim:orin-nano?unit=2"}, ("jetson:auto?root=/tmp/theirs",), "sim:orin-nano?unit=2"),
    # a simulated fleet: virtual SuperNodes take their sim: board from the broadcast
    ({"partition-id": 1}, ("sim:orin-agx", "sim:orin-nano?unit=1"), "sim:orin-nano?unit=1"),
])
def test_node_device_spec_sources(node_config: dict[str, object], fleet: tuple[str, ...], expected: str) -> None:
    partition = int(str(node_config.get("partition-id", 0)))
    assert node_device_spec(node_config, fleet, partition, 7) == expected


@pytest.mark.parametrize(("fleet", "needle"), [
    (("jetson:auto",), "refuses device 'jetson:auto'"),
    (("jetson:orin-agx?root=/tmp/x&unit=0",), "only sim: boards"),
    ((), "has no device"),
])
def test_node_device_spec_refusals(fleet: tuple[str, ...], needle: str) -> None:
    with pytest.raises(DeviceError, match=needle):
        node_device_spec({}, fleet, 0, 7)


def test_a_sim_spec_cannot_carry_a_root() -> None:
    """The sim backend has no root= option: a broadcast sim spec cannot smuggle one in."""
    from powertrain.devices import make_device

    spec = node_device_spec({}, ("sim:orin-agx?root=/tmp/x",), 0, 7)
    with pytest.raises(InvalidParameterError, match="'root' is not known for sim devices"):
        make_device(spec)
