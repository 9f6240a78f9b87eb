"""Every output goes through powertrain.outputs: validated up front, atomic, never over a special
file, umask honoured, nothing left behind. Each CLI output option is tried with a directory, an
unwritable parent, a FIFO and an existing special file."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from coordinator.store.local_store import LocalModelStore
from powertrain.boards import get_space
from powertrain.devices import SimulatedJetson
from powertrain.outputs import OutputError, atomic_output, atomic_outputs, check_output, check_output_dir
from powertrain.profile_io import write_profile


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A profile, a modes file, a model and a store to run every command with an output."""
    from powerfleet.cli import main

    base = tmp_path_factory.mktemp("inputs")
    nano = SimulatedJetson("orin-nano", noise=None)
    modes = get_space("orin-nano").modes("powertrain").sample(60, random_state=0)
    ref = nano.true_performance("resnet18-imagenet", modes)
    write_profile(ref.assign(device="orin-nano", workload="resnet18-imagenet"), base / "ref.csv")
    get_space("orin-nano").modes("powertrain").head(30).to_csv(base / "modes.csv", index=False)
    assert main(["fit", str(base / "ref.csv"), "-o", str(base / "ref.model"), "--members", "2",
                 "--fit-steps", "40", "--transfer-steps", "20"]) == 0
    return {"dir": base, "ref": base / "ref.csv", "modes": base / "modes.csv", "model": base / "ref.model"}


@pytest.fixture(scope="module")
def store_url(inputs: dict[str, Path]) -> str:
    store = LocalModelStore(inputs["dir"] / "store.sqlite")
    store.put_artifact(inputs["model"].read_bytes())
    store.close()
    return f"file://{inputs['dir'] / 'store.sqlite'}"


#: Every CLI output option: (name, build the argument list for an output path).
def _commands(inputs: dict[str, Path], store_url: str) -> dict[str, Callable[[Path], list[str]]]:
    model, modes, ref = str(inputs["model"]), str(inputs["modes"]), str(inputs["ref"])
    good = str(inputs["dir"] / "good.out")
    return {
        "fit -o": lambda p: ["fit", ref, "-o", str(p), "--members", "2", "--fit-steps", "20"],
        "transfer -o": lambda p: ["transfer", model, ref, "-o", str(p)],
        "predict -o": lambda p: ["predict", model, modes, "-o", str(p)],
        "pareto -o": lambda p: ["pareto", model, "--device", "orin-nano", "-o", str(p)],
        "pareto --plot": lambda p: ["pareto", model, "--device", "orin-nano", "-o", good + ".csv", "--plot", str(p)],
        "modes -o": lambda p: ["modes", "--device", "orin-nano", "-o", str(p)],
        "profile -o": lambda p: ["profile", "--device", "sim:orin-nano", "--workload", "lstm-wikitext",
                                 "--modes", "2", "--minibatches", "3", "-o", str(p)],
        "store export -o": lambda p: ["store", "export", "-o", str(p), "--store", store_url],
        "store export --format models -o": lambda p: ["store", "export", "-o", str(p), "--format", "models",
                                                      "--store", store_url],
    }


COMMANDS = ["fit -o", "transfer -o", "predict -o", "pareto -o", "pareto --plot", "modes -o", "profile -o",
            "store export -o", "store export --format models -o"]
CASES = ["directory", "missing-parent", "parent-is-a-file", "unwritable-parent", "fifo", "special-file"]


def _target(case: str, tmp_path: Path, command: str) -> Path:
    wants_dir = command.startswith("store export --format models")
    if case == "directory":
        if wants_dir:  # the models export writes into a directory: give it a regular file instead
            path = tmp_path / "plain-file"
            path.write_text("keep me\n")
            return path
        path = tmp_path / "a-directory"
        path.mkdir()
        return path
    if case == "missing-parent":
        return tmp_path / "no-such-dir" / "out"
    if case == "parent-is-a-file":
        (tmp_path / "blocker").write_text("keep me\n")
        return tmp_path / "blocker" / "out"
    if case == "unwritable-parent":
        return Path("/sys/powerfleet-test-output")  # sysfs: not even root can create a file there
    if case == "fifo":
        path = tmp_path / "a-fifo"
        os.mkfifo(path)
        return path
    return Path("/dev/full")  # writing would fail, replacing it would break the system


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", COMMANDS)
def test_every_output_option_refuses_bad_targets(cli, inputs: dict[str, Path], store_url: str,  # type: ignore[no-untyped-def]
                                                 tmp_path: Path, command: str, case: str) -> None:
    target = _target(case, tmp_path, command)
    before = sorted(p.name for p in tmp_path.iterdir())
    special = os.stat("/dev/full")
    code, _out, err = cli(*_commands(inputs, store_url)[command](target))
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (command, case, err)
    assert "Traceback" not in err and str(target) in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing left behind
    if case == "fifo":
        assert stat.S_ISFIFO(os.stat(target).st_mode)  # still a FIFO, never replaced
    if case == "special-file":
        now = os.stat("/dev/full")
        assert stat.S_ISCHR(now.st_mode) and (now.st_rdev, now.st_ino) == (special.st_rdev, special.st_ino)
    if case == "directory" and target.is_dir():
        assert list(target.iterdir()) == []
    if case in ("directory", "parent-is-a-file") and not target.is_dir():
        blocker = target if target.is_file() else target.parent
        assert blocker.read_text() == "keep me\n"
    assert not (inputs["dir"] / "good.out.csv").exists()  # pareto --plot: the CSV is not written alone


def test_outputs_honour_the_umask_and_keep_an_existing_mode(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        with atomic_output(tmp_path / "new.txt") as tmp:
            tmp.write_text("x")
        assert stat.S_IMODE(os.stat(tmp_path / "new.txt").st_mode) == 0o640
    finally:
        os.umask(old)
    kept = tmp_path / "kept.txt"
    kept.write_text("old")
    os.chmod(kept, 0o604)
    with atomic_output(kept) as tmp:
        tmp.write_text("new")
    assert kept.read_text() == "new" and stat.S_IMODE(os.stat(kept).st_mode) == 0o604


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("the command failed midway")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]
    with pytest.raises(OutputError) as exc, atomic_outputs((tmp_path / "a", "--a"), (tmp_path / "b", "--b")) as t:
        t[0].write_text("a")
        raise OSError(28, "No space left on device")
    assert "No space left on device" in str(exc.value) and sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_a_symlink_is_followed_and_a_link_to_a_special_file_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.txt"
    real.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    with atomic_output(link) as tmp:
        tmp.write_text("new")
    assert link.is_symlink() and real.read_text() == "new"
    bad = tmp_path / "to-null"
    bad.symlink_to("/dev/null")
    with pytest.raises(OutputError, match="character device"):
        check_output(bad, what="--output")
    assert bad.is_symlink()


def test_output_directories(tmp_path: Path) -> None:
    made = check_output_dir(tmp_path / "a" / "b")
    assert made.is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a regular file, not a directory"):
        check_output_dir(tmp_path / "file", what="--out")
    with pytest.raises(OutputError, match="cannot create"):
        check_output_dir("/sys/powerfleet-test-dir", what="--out")
    with pytest.raises(OutputError, match="does not exist"):
        check_output_dir(tmp_path / "missing", create=False)


def test_the_run_report_writes_through_the_helper(tmp_path: Path) -> None:
    """coordinator/report.py validates its directory before writing and writes every file atomically."""
    from coordinator.report import check_report_dir

    (tmp_path / "taken").write_text("x")
    with pytest.raises(OutputError, match="not a directory"):
        check_report_dir(tmp_path / "taken")
    with pytest.raises(OutputError):
        check_report_dir(Path("/sys/powerfleet-report"))
    assert check_report_dir(tmp_path / "new").is_dir()
