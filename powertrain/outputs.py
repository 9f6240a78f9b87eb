"""The one way powerfleet writes an output file: checked up front, atomic, never over a special file.

Every command's outputs (``-o``, ``--plot``, export files, run reports, ``.model`` files) go
through this module:

* :func:`check_output` validates a path *before* any work is done: not a directory, not a
  special file (FIFO, device, socket), a parent that exists, is a directory and accepts a new
  file (probed by creating and removing one, which is what counts even for root);
* :func:`atomic_output` / :func:`atomic_outputs` write regular files through a temporary file
  beside the target and a rename, only if the whole block succeeds; a failure leaves nothing
  behind and the old file (if any) untouched;
* new files get ``0o666 & ~umask`` (an existing file keeps its mode), like any other tool;
* a symbolic link is followed: the file it names is what gets checked and replaced.

Errors are :class:`OutputError`, one line naming the option, the path and what is allowed.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from powertrain.errors import PowerfleetError

__all__ = ["OutputError", "atomic_output", "atomic_outputs", "check_output", "check_output_dir", "current_umask",
           "user_cache_dir"]


class OutputError(PowerfleetError):
    """An output path that cannot be written (directory, special file, unwritable place)."""


def user_cache_dir(*parts: str) -> Path:
    """``$XDG_CACHE_HOME/powerfleet/<parts>``, else ``~/.cache/powerfleet/<parts>``: where the
    embedded store and the caches of characterisations and generated data live."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base, "powerfleet", *parts)


def current_umask() -> int:
    """The process umask, read without changing it (Linux ``/proc``), else set-and-restore."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _resolve(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if str(path) == "":
        raise OutputError("output path is empty; give a file path")
    return Path(os.path.realpath(p)) if p.is_symlink() else p


def _probe(directory: Path, what: str, shown: str | Path) -> None:
    """Create and remove a file in ``directory``: the only test of writability that holds for root."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".powerfleet-probe.", dir=directory)
    except OSError as exc:
        raise OutputError(f"{what} {shown}: cannot create files in {directory} "
                          f"({exc.strerror or exc})") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def check_output(path: str | Path, *, what: str = "output") -> Path:
    """Validate an output file path before any work; returns the file to write (links followed).

    Refused: a directory, an existing special file, a missing parent directory, a parent that
    is not a directory, and a place where no file can be created.
    """
    target = _resolve(path)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise OutputError(f"{what} {path}: {_first_non_dir(target)} is not a directory") from None
    except OSError as exc:
        raise OutputError(f"{what} {path}: cannot be checked ({exc.strerror or exc})") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise OutputError(f"{what} {path}: is a directory; give a file path")
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(f"{what} {path}: is {_kind(st.st_mode)}; refusing to replace it "
                              "(give a regular file path)")
    parent = target.parent
    if not parent.exists():
        raise OutputError(f"{what} {path}: directory {parent} does not exist")
    if not parent.is_dir():
        raise OutputError(f"{what} {path}: {parent} is not a directory")
    _probe(parent, what, path)
    return target


def _first_non_dir(path: Path) -> Path:
    for p in reversed(path.parents):
        if p.exists() and not p.is_dir():
            return p
    return path.parent


def check_output_dir(path: str | Path, *, what: str = "output directory", create: bool = True) -> Path:
    """Validate (and with ``create``, make) an output directory before any work; returns it."""
    target = _resolve(path)
    if target.exists() and not target.is_dir():
        st = os.stat(target)
        kind = "a regular file" if stat.S_ISREG(st.st_mode) else _kind(st.st_mode)
        raise OutputError(f"{what} {path}: is {kind}, not a directory")
    if not target.exists():
        if not create:
            raise OutputError(f"{what} {path}: directory does not exist")
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{what} {path}: cannot create it ({exc.strerror or exc})") from None
    _probe(target, what, path)
    return target


def _final_mode(target: Path) -> int:
    try:
        st = os.stat(target)
    except OSError:
        return 0o666 & ~current_umask()
    return stat.S_IMODE(st.st_mode)


def _commit(tmp: Path, target: Path, what: str, shown: str | Path) -> None:
    """Give ``tmp`` its final mode, flush it to disk and rename it over ``target``."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode) and not stat.S_ISLNK(st.st_mode):
        raise OutputError(f"{what} {shown}: became {_kind(st.st_mode)} while writing; refusing to replace it")
    os.chmod(tmp, _final_mode(target))
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)


@contextlib.contextmanager
def atomic_outputs(*outputs: tuple[str | Path, str]) -> Iterator[list[Path]]:
    """Write several files as one: yields a temporary path per ``(path, what)``; all are moved into
    place only if the block succeeds, and every path is validated before the block starts.

    An ``OSError`` raised while writing (disk full, ...) becomes one :class:`OutputError` line.
    """
    targets = [check_output(path, what=what) for path, what in outputs]
    if len({str(t) for t in targets}) != len(targets):
        raise OutputError(f"outputs {', '.join(str(p) for p, _ in outputs)}: two of them name the same file")
    temps: list[Path] = []
    try:
        for target, (path, what) in zip(targets, outputs, strict=True):
            try:
                fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            except OSError as exc:
                raise OutputError(f"{what} {path}: cannot create a file in {target.parent} "
                                  f"({exc.strerror or exc})") from None
            os.close(fd)
            temps.append(Path(name))
        try:
            yield list(temps)
        except OSError as exc:
            raise OutputError(f"{_names(outputs)}: write failed ({exc.strerror or exc})") from None
        for staged, target, (path, what) in zip(temps, targets, outputs, strict=True):
            try:
                _commit(staged, target, what, path)
            except OSError as exc:
                raise OutputError(f"{what} {path}: cannot write it ({exc.strerror or exc})") from None
    finally:
        for staged in temps:
            with contextlib.suppress(OSError):
                staged.unlink()


def _names(outputs: Sequence[tuple[str | Path, str]]) -> str:
    return ", ".join(f"{what} {path}" for path, what in outputs)


@contextlib.contextmanager
def atomic_output(path: str | Path, mode: str = "w", *, what: str = "output") -> Iterator[Path]:
    """One output file (see :func:`atomic_outputs`); yields the temporary path to write."""
    del mode  # kept for callers of the old signature: the caller opens the temporary path itself
    with atomic_outputs((path, what)) as (tmp,):
        yield tmp
