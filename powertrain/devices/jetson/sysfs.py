"""Path resolution and safe reads/writes of sysfs, debugfs and procfs files under a root.

Every kernel path the Jetson backend touches (``/sys/...``, ``/proc/...``, ``/etc/...``) is
resolved under a configurable root: the ``root`` argument, else ``$POWERFLEET_SYSFS_ROOT``,
else ``/``. Tests point it at fake device trees built in a temp dir. Every read and write stays
inside the root: a path whose symlinks lead out of it is refused before it is opened, and the
file itself is opened with ``O_NOFOLLOW``. OS errors are translated here, once, into one-line
:class:`~powertrain.errors.DeviceError` messages; a refused write names the file and says that
root is needed. Successful writes are logged in order (:attr:`Sysfs.writes`) and the writer is
injectable, so tests can emulate kernel behaviour.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from powertrain.errors import DeviceError, DevicePermissionError

#: Environment variable naming the directory that stands in for ``/``.
ROOT_ENV = "POWERFLEET_SYSFS_ROOT"

#: ``writer(resolved_path, value)`` performs one write; tests inject a fake kernel here.
Writer = Callable[[Path, str], None]
#: ``access(resolved_path)`` says whether the process may write the file (a preflight check).
AccessCheck = Callable[[Path], bool]


def resolve_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The directory that stands in for ``/``: ``root``, else ``$POWERFLEET_SYSFS_ROOT``, else ``/``."""
    text = os.fspath(root) if root is not None else os.environ.get(ROOT_ENV, "") or "/"
    path = Path(text).expanduser()
    if not path.is_dir():
        source = "sysfs root" if root is not None else ROOT_ENV
        raise DeviceError(f"{source} {text!r} is not a directory")
    return path.resolve()


def default_writer(path: Path, value: str) -> None:
    """Write ``value`` to an existing file, never creating one nor following a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def default_access(path: Path) -> bool:
    """Whether the real user may write ``path``."""
    return os.access(path, os.W_OK)


@dataclass(frozen=True)
class WriteRecord:
    """One successful write: the kernel path and the value written."""

    path: str
    value: str


def _natural_key(text: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


@dataclass
class Sysfs:
    """Kernel files under a root directory, with error translation and a write log."""

    root: Path = field(default_factory=resolve_root)
    writer: Writer = default_writer
    access: AccessCheck = default_access
    writes: list[WriteRecord] = field(default_factory=list)

    @classmethod
    def at(cls, root: str | os.PathLike[str] | None = None, *, writer: Writer | None = None,
           access: AccessCheck | None = None) -> Sysfs:
        """A view rooted at ``root`` (resolved as :func:`resolve_root` does)."""
        return cls(resolve_root(root), writer or default_writer, access or default_access)

    # ------------------------------------------------------------------ paths
    def path(self, kernel_path: str) -> Path:
        """The file that stands for ``kernel_path`` (an absolute path such as ``/sys/...``)."""
        return self.root / kernel_path.lstrip("/")

    def real(self, kernel_path: str) -> Path:
        """The file ``kernel_path`` resolves to; a DeviceError if symlinks lead it out of the root."""
        path = self.path(kernel_path)
        real = Path(os.path.realpath(path))
        root = Path(os.path.realpath(self.root))
        if real != root and root not in real.parents:
            raise DeviceError(f"{path} resolves to {real}, outside the device tree {root}; refused "
                              "(a symlink leads out of the sysfs root)")
        return real

    def exists(self, kernel_path: str) -> bool:
        """Whether ``kernel_path`` exists and can be reached (debugfs is 0700 root: False for users).

        A path that resolves out of the root is an error, not a missing file.
        """
        real = self.real(kernel_path)
        try:
            return real.exists()
        except OSError:  # EACCES from stat() below an unreadable directory
            return False

    def glob(self, pattern: str) -> list[str]:
        """Kernel paths matching a glob pattern, in natural order (cpu2 before cpu10)."""
        found = [("/" + str(p.relative_to(self.root))) for p in self.root.glob(pattern.lstrip("/"))]
        return sorted(found, key=_natural_key)

    # ------------------------------------------------------------------ reads
    def read_bytes(self, kernel_path: str) -> bytes:
        """The raw contents of a file inside the root; errors are one-line DeviceErrors."""
        path = self.path(kernel_path)
        try:
            fd = os.open(self.real(kernel_path), os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as f:
                return f.read()
        except PermissionError:
            raise DevicePermissionError(
                f"reading {path} was refused (permission denied); this file needs root, run as root"
            ) from None
        except FileNotFoundError:
            raise DeviceError(f"{path} does not exist; is this a Jetson (or the right --sysfs-root)?") \
                from None
        except OSError as exc:
            raise DeviceError(f"reading {path} failed: {_describe(exc)}") from None

    def read(self, kernel_path: str) -> str:
        """File contents, stripped of whitespace and device-tree NULs; errors are DeviceErrors."""
        return self.read_bytes(kernel_path).replace(b"\0", b" ").decode(errors="replace").strip()

    def try_read(self, kernel_path: str) -> str | None:
        """Like :meth:`read`, but None when the file is missing or unreadable."""
        try:
            return self.read(kernel_path)
        except DeviceError:
            return None

    def read_int(self, kernel_path: str) -> int:
        """The file's single integer."""
        text = self.read(kernel_path)
        try:
            return int(text.split()[0])
        except (ValueError, IndexError):
            raise DeviceError(f"{self.path(kernel_path)} holds {text!r}, expected an integer") from None

    def try_read_int(self, kernel_path: str) -> int | None:
        """Like :meth:`read_int`, but None when the file is missing, unreadable or not a number."""
        try:
            return self.read_int(kernel_path)
        except DeviceError:
            return None

    def read_ints(self, kernel_path: str) -> list[int]:
        """Whitespace-separated integers (e.g. ``scaling_available_frequencies``)."""
        text = self.read(kernel_path)
        try:
            return [int(tok) for tok in text.split()]
        except ValueError:
            raise DeviceError(f"{self.path(kernel_path)} holds {text!r}, expected integers") from None

    # ------------------------------------------------------------------ writes
    def check_writable(self, kernel_path: str) -> None:
        """Raise before any write if ``kernel_path`` is missing or not writable by this user."""
        path = self.path(kernel_path)
        real = self.real(kernel_path)
        if not real.exists():
            raise DeviceError(f"{path} does not exist; this board cannot set that knob")
        if not self.access(real):
            raise DevicePermissionError(
                f"writing {path} needs root (permission denied); run as root, e.g. with sudo"
            )

    def write(self, kernel_path: str, value: int | str) -> None:
        """Write ``value`` to ``kernel_path``; log it; translate errors into one-line DeviceErrors."""
        text = str(value)
        path = self.path(kernel_path)
        real = self.real(kernel_path)  # refused before anything is opened if it leaves the root
        try:
            self.writer(real, text)
        except PermissionError:
            raise DevicePermissionError(
                f"writing {path} was refused (permission denied); setting power modes needs root, "
                "run as root, e.g. with sudo"
            ) from None
        except FileNotFoundError:
            raise DeviceError(f"{path} does not exist; this board cannot set that knob") from None
        except OSError as exc:
            raise DeviceError(f"writing {text} to {path} failed: {_describe(exc)}") from None
        self.writes.append(WriteRecord(kernel_path, text))


def _describe(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno, "") if exc.errno is not None else ""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{reason} ({name})" if name else reason
