"""Atomic file writes with the permissions the user's umask gives.

Every file bayescale writes (a saved fit, a demo figure, a downloaded dataset) goes through
here: the bytes go to a temporary file in the destination's folder, which is flushed, synced,
given the mode a plain ``open(path, "w")`` would give (``0o666`` less the umask; `tempfile`
alone leaves ``0o600``) and then renamed over the destination. A failed write (a full disk, a
quota, a read-only folder) removes the temporary file, leaves any previous file untouched and
raises an `OSError` that says so.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "file_mode"]

_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    try:  # Linux >= 4.7 reports it; no window in which another thread sees umask 0
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode of a new regular file: ``0o666`` less the umask (``0o644`` under umask 022)."""
    return 0o666 & ~_umask()


def atomic_write(
    path: str | os.PathLike[str], write: bytes | Callable[[BinaryIO], None], *, suffix: str = ""
) -> Path:
    """Write ``path`` atomically: a temporary file in its folder, synced, then renamed.

    Parameters
    ----------
    path : path
        The destination; its folder is created when missing. An existing file is replaced
        only once the new content is completely on disk.
    write : bytes or callable
        The content, or ``write(handle)`` that writes it to a binary file handle.
    suffix : str
        Suffix of the temporary file's name (it starts with ``.`` and the destination's name).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OSError
        If the content cannot be written (no space left, quota, permissions). The message
        names the file and says that a previous file at ``path`` is unchanged; ``errno`` is
        the original one.
    """
    path = Path(os.fspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(write, (bytes, bytearray, memoryview)):
                handle.write(write)
            else:
                write(handle)
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), file_mode())
        os.replace(tmp, path)
    except OSError as exc:
        kept = "the previous file is unchanged" if path.exists() else "nothing was written"
        raise OSError(
            exc.errno,
            f"could not write {str(path)!r}: {exc.strerror or exc}; {kept}. Free some space "
            "(or fix the folder's permissions) and save again, or pass another path",
            str(path),
        ) from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
