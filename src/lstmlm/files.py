"""Files written whole or not at all, with the permission bits of a new file.

`atomic_write` writes to a temporary name, syncs and renames over the target, so a crash
leaves the old file or the new one, never a torn one. `tempfile.mkstemp` creates files
0600 whatever the umask; files written through a temporary name (checkpoints, downloads)
take the bits `open()` would give (0666 less the umask) before they are renamed into
place, so a run folder reads like any other folder of the user's.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TMP_SUFFIX = ".tmp"  # atomic_write's temporary files: .NAME.<random>.tmp


def atomic_write(path: str | Path, data: bytes | str | Callable[[BinaryIO], None]) -> None:
    """Replace `path` with `data` (or what the callable writes to the open file), atomically."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        chmod_like_new(fd)  # mkstemp's 0600 would make every run file private
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _write_error(path, e) from None
        raise
    _fsync_dir(path.parent)


def append_line(path: str | Path, line: str) -> None:
    """Append `line` (no newline in it) and a newline to `path`, whole or not at all.

    A write that fails part-way (disk full) is cut back off, so readers never see a torn
    line from it, and the OSError names the file. A last line torn by a crash (the file
    does not end in a newline) is ended first, so the new line stays a line of its own.
    """
    path = Path(path)
    data = line.encode("utf-8") + b"\n"
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as e:
        raise _append_error(path, e) from None
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as e:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)  # frees what the failed write used
        raise _append_error(path, e) from None
    finally:
        os.close(fd)


def _append_error(path: Path, e: OSError) -> OSError:
    why = e.strerror or str(e) or type(e).__name__
    return OSError(e.errno, f"cannot append to it ({why}); its earlier lines are whole", str(path))


def _write_error(path: Path, e: OSError) -> OSError:
    """The OSError of a failed write, naming the file and saying the old one is intact."""
    why = e.strerror or str(e) or type(e).__name__
    return OSError(
        e.errno, f"cannot write it ({why}); the previous version (if any) is unchanged", str(path)
    )


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def default_file_mode() -> int:
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it (Linux /proc); else the common 022."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def chmod_like_new(fd: int) -> None:
    """Give the open file `fd` the bits of a newly created file (where chmod exists)."""
    if hasattr(os, "fchmod"):
        os.fchmod(fd, default_file_mode())
