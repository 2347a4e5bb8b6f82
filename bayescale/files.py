"""Atomic file writes, and output paths checked before the work that fills them.

Every file bayescale writes (a saved fit, a figure, a table from the CLI, a downloaded
dataset) goes through `atomic_write`: the bytes go to a temporary file in the destination's
folder, which is flushed, synced, given its mode and then renamed over the destination. A
symbolic link is written through (its target is replaced, the link stays); an existing file
keeps its mode, a new one gets what a plain ``open(path, "w")`` would give (``0o666`` less the
umask; `tempfile` alone leaves ``0o600``). A failed write (a full disk, a quota, a read-only
folder) removes the temporary file, leaves any previous file untouched and raises a
`WriteError` that names the destination (never the temporary file) and what to do.

Temporary files are named ``.bayescale-tmp-<host>-<pid>-...``: a process killed while writing
(SIGKILL, or SIGTERM, which runs no clean-up) leaves one behind, and the next write to the same
folder removes those of processes of this host that no longer run (and any older than a day).

`check_path` refuses, before any work, a path that cannot be written: a folder, a parent that
is a file, a name too long for the file system, a folder without write permission.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from bayescale.errors import OptionError, OptionTypeError

__all__ = ["WriteError", "atomic_write", "check_path", "file_mode", "TEMP_PREFIX"]

_UMASK_LOCK = threading.Lock()
#: the start of every temporary file's name
TEMP_PREFIX = ".bayescale-tmp-"
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_TEMP = re.compile(re.escape(TEMP_PREFIX) + r"(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-")
#: a temporary file of another host (or a reused pid) older than this is stale, in seconds
_STALE_AGE = 24 * 3600.0


class WriteError(OSError):
    """A file could not be written; the message names it and says what to do.

    ``errno`` is the system's, ``filename`` the destination.
    """

    def __str__(self) -> str:
        return str(self.strerror)


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


def _as_path(path: Any, option: str) -> Path:
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, (str, os.PathLike)):
        raise OptionTypeError(
            f"{option} must be a file path (a str or pathlib.Path); received {path!r}."
        )
    text = os.fsdecode(os.fspath(path))
    if not text.strip():
        raise OptionError(f"{option} is empty; received {text!r}. Pass a file path.")
    return Path(text).expanduser()


def _existing_folder(folder: Path) -> Path:
    """``folder`` or its nearest ancestor that exists (possibly a file)."""
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    return folder


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def _advice(code: int | None, folder: Path) -> str:
    """What to do about a failed write, by its errno."""
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "Free some space, or pass a path on another disk."
    if code in (errno.EACCES, errno.EPERM):
        return (
            f"You may not write in the folder {str(folder)!r}: fix its permissions, or pass a "
            "path in a folder you can write to."
        )
    if code == errno.EROFS:
        return "The file system is read-only: pass a path on a writable disk."
    if code == errno.ENAMETOOLONG:
        return "Pass a shorter file name."
    return "Pass another path."


def check_path(
    path: Any, *, option: str = "the path", folder: bool = False, example: str = "fit.nc"
) -> Path:
    """Refuse, before any work, an output path that cannot be written.

    Parameters
    ----------
    path : str or path
        The output file (or folder, with ``folder=True``); missing folders on the way are
        fine (they are created when writing).
    option : str
        How messages name the path (``"--out"`` from the command line).
    folder : bool, default False
        Whether ``path`` is a folder to write files into.
    example : str, default "fit.nc"
        A file name that messages suggest.

    Returns
    -------
    Path
        ``path`` with ``~`` expanded.

    Raises
    ------
    OptionTypeError
        If ``path`` is not a path (None, a number...).
    OptionError
        If it is empty, a folder (a file with ``folder=True``), below a file, or its name is
        longer than the file system allows.
    WriteError
        If a file cannot be created in its folder (permissions, a read-only disk...).
    """
    target = _as_path(path, option)
    shown = f"{option} {os.fspath(target)!r}"
    real = Path(os.path.realpath(target))  # a link is written through to its target
    if os.path.isdir(real) and not folder:
        raise OptionError(
            f"{shown} is a folder; it needs a file name, such as {str(target / example)!r}."
        )
    if folder and os.path.lexists(real) and not os.path.isdir(real):
        raise OptionError(f"{shown} is a file, not a folder. Pass a folder's path.")
    parent = _existing_folder(real if folder else real.parent)
    if not os.path.isdir(parent):
        raise OptionError(
            f"{shown}: {str(parent)!r} is a file, not a folder, so nothing can be written "
            "below it. Pass a path in a folder."
        )
    limit = _name_max(parent)
    for part in real.relative_to(parent).parts:
        if len(os.fsencode(part)) > limit:
            raise OptionError(
                f"{shown}: the name {part[:40] + '...'!r} is {len(os.fsencode(part))} bytes "
                f"long; this file system allows at most {limit}. Pass a shorter name."
            )
    probe = parent / _temp_name("probe")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise WriteError(
            exc.errno,
            f"cannot write {shown}: {exc.strerror or exc} in {str(parent)!r}. "
            + _advice(exc.errno, parent),
            os.fspath(target),
        ) from None
    return target


def _temp_name(name: str, suffix: str = "") -> str:
    tail = re.sub(r"[^A-Za-z0-9_.]", "_", name)[:40]
    return f"{TEMP_PREFIX}{_HOST}-{os.getpid()}-{secrets.token_hex(4)}-{tail}{suffix}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True


def _remove_stale(folder: Path) -> None:
    """Remove temporary files that killed writers left in ``folder`` (see the module notes)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    now = time.time()
    for entry in entries:
        found = _TEMP.match(entry.name)
        if not found:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode):
                continue
            ours = found["host"] == _HOST
            if (ours and not _alive(int(found["pid"]))) or now - info.st_mtime > _STALE_AGE:
                os.unlink(entry.path)
        except OSError:  # another writer removed it first, or it is not ours to remove
            continue


def atomic_write(
    path: str | os.PathLike[str], write: bytes | Callable[[BinaryIO], None], *, suffix: str = ""
) -> Path:
    """Write ``path`` atomically: a temporary file in its folder, synced, then renamed.

    Parameters
    ----------
    path : path
        The destination; its folder is created when missing. An existing file is replaced
        only once the new content is completely on disk, and keeps its mode; a symbolic link
        is written through to its target.
    write : bytes or callable
        The content, or ``write(handle)`` that writes it to a binary file handle.
    suffix : str
        Suffix of the temporary file's name.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OptionError, OptionTypeError, WriteError
        As `check_path` for a path that cannot be written; `WriteError` (an `OSError`) if the
        content cannot be written (no space left, quota, permissions). The message names the
        file and says that a previous file at ``path`` is unchanged; ``errno`` is the
        original one.
    """
    given = _as_path(path, "the path")
    dest = Path(os.path.realpath(given))
    if os.path.isdir(dest):
        check_path(given)  # raises, naming the folder
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        check_path(given)  # a parent is a file: raises, naming it
        raise
    except OSError as exc:
        raise WriteError(
            exc.errno,
            f"could not create the folder {str(dest.parent)!r} for {str(given)!r}: "
            f"{exc.strerror or exc}. " + _advice(exc.errno, _existing_folder(dest.parent)),
            str(given),
        ) from None
    _remove_stale(dest.parent)
    try:
        mode = stat.S_IMODE(dest.stat().st_mode)
    except OSError:
        mode = file_mode()
    tmp = dest.parent / _temp_name(dest.name, suffix)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            if isinstance(write, (bytes, bytearray, memoryview)):
                handle.write(write)
            else:
                write(handle)
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), mode)
        os.replace(tmp, dest)
    except OSError as exc:
        kept = "the previous file is unchanged" if dest.exists() else "nothing was written"
        raise WriteError(
            exc.errno,
            f"could not write {str(given)!r}: {exc.strerror or exc}; {kept}. "
            + _advice(exc.errno, dest.parent),
            str(given),
        ) from exc
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return given
