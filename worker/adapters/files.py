"""Files holding personal data: written whole, private, never through a link.

A print batch or a digest is claimed by its final name: the content is
written to a temporary file in the same directory and fsynced, then linked to
that name (``os.link`` fails if the name exists), so a reader never sees a
partial file and two workers never both publish the same one.

Every file written here holds personal data (letters, print batches, digests,
flux reports, the local SMS/e-mail outbox): it is created with an explicit
mode — :data:`PRIVATE_MODE` (0600), or :data:`SHARED_MODE` (0640) for what the
mail room or the agents read from a shared folder — whatever the umask.
Temporary files have unpredictable names and are created with ``O_EXCL``
(:func:`tempfile.mkstemp`); no path is opened through a symbolic link: a link
planted in a shared folder (the inbox, the letters) is refused
(:class:`SymlinkError`), never followed.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["write_temp", "publish", "fsync_dir", "create_new", "PRIVATE_MODE", "SHARED_MODE", "DIR_MODE",
           "SymlinkError", "refuse_symlink", "safe_dir", "replace_file", "append_line", "rewrite_lines",
           "settle", "remove_older_than", "remove_day_dirs"]

PRIVATE_MODE = 0o600
SHARED_MODE = 0o640
DIR_MODE = 0o750


class SymlinkError(OSError):
    """A symbolic link where a file or folder of the project was expected (French message)."""


def refuse_symlink(path: Path) -> None:
    """SymlinkError if ``path`` is a symbolic link (dangling or not)."""
    if os.path.islink(path):
        raise SymlinkError(f"lien symbolique refusé : {Path(path).name} (déposer le fichier lui-même)")


def safe_dir(root: Path, *parts: str) -> Path:
    """``root/part/...``, each part created (mode 0750) if missing; SymlinkError if one is a link.

    ``root`` itself is the configured folder (it may be a mount point or a link set up by ops);
    what is below it is the project's.
    """
    directory = Path(root)
    directory.mkdir(parents=True, exist_ok=True)
    for part in parts:
        if not part or part in (".", "..") or "/" in part or "\\" in part:
            raise ValueError(f"nom de dossier invalide : {part!r}")
        directory = directory / part
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:
            refuse_symlink(directory)
            if not directory.is_dir():
                raise NotADirectoryError(f"pas un dossier : {directory}") from None
    return directory


def write_temp(directory: Path, data: bytes, suffix: str, mode: int = PRIVATE_MODE) -> Path:
    """A new file of ``directory`` holding ``data``: unpredictable name, O_EXCL, ``mode``, fsynced."""
    fd, name = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def publish(temp: Path, final: Path) -> None:
    """Move ``temp`` to ``final`` atomically; FileExistsError if ``final`` exists.

    ``os.link`` fails if the target exists, so two workers can never both
    publish the same batch; ``os.replace`` after a check is the fallback on
    file systems without hard links.
    """
    try:
        os.link(temp, final)
    except FileExistsError:
        raise FileExistsError(f"existe déjà : {final}") from None
    except OSError:
        if final.exists():
            raise FileExistsError(f"existe déjà : {final}") from None
        os.replace(temp, final)
        return
    os.unlink(temp)


def fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - not on every platform
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def create_new(path: Path, data: bytes, mode: int = SHARED_MODE) -> bool:
    """Write ``path`` whole with ``data`` unless it exists; True if this call created it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = write_temp(path.parent, data, path.suffix, mode)
    try:
        publish(temp, path)
    except FileExistsError:
        return False
    finally:
        temp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return True


def replace_file(path: Path, data: bytes, mode: int = PRIVATE_MODE) -> None:
    """Write ``path`` whole (a temporary file renamed over it): a link at ``path`` is replaced, not followed."""
    path = Path(path)
    temp = write_temp(path.parent, data, path.suffix, mode)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _open_locked_append(path: Path, mode: int) -> int:
    """A descriptor appending to ``path`` (created ``mode``), locked, on the file now at ``path``."""
    while True:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # rewrite_lines may have replaced the file while we waited for the lock: append to the new one
            if os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino:
                return fd
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def append_line(path: Path, line: str, mode: int = PRIVATE_MODE) -> None:
    """Append one line (``\\n`` added) to ``path``, created with ``mode``; never through a link."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    refuse_symlink(path)
    fd = _open_locked_append(path, mode)  # O_NOFOLLOW: a link planted since is refused (ELOOP)
    try:
        current = stat.S_IMODE(os.fstat(fd).st_mode)
        if current & ~mode:  # a file from before: no longer readable by others
            os.fchmod(fd, current & mode)
        data = memoryview((line.rstrip("\n") + "\n").encode("utf-8"))
        while data:
            data = data[os.write(fd, data):]
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock


def rewrite_lines(path: Path, keep: Callable[[str], bool]) -> int:
    """Drop the lines of ``path`` for which ``keep`` is false (whole-file rewrite, same mode, under the
    lock :func:`append_line` takes); returns how many were dropped. A missing file: 0."""
    path = Path(path)
    if not path.exists():
        return 0
    refuse_symlink(path)
    fd = _open_locked_append(path, PRIVATE_MODE)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        with open(path, "rb", opener=_nofollow_reader) as fh:
            lines = fh.read().decode("utf-8").splitlines(keepends=True)
        kept = [ln for ln in lines if keep(ln)]
        dropped = len(lines) - len(kept)
        if dropped:
            replace_file(path, "".join(kept).encode("utf-8"), mode)
        return dropped
    finally:
        os.close(fd)


def read_nofollow(path: Path) -> bytes:
    """A file's bytes, refusing a symbolic link even one swapped in since it was checked (ELOOP)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def _nofollow_reader(path, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)


def settle(path: Path, when: dt.datetime | None = None, mode: int = PRIVATE_MODE) -> None:
    """Give a file taken in (a flux file moved to inbox/done) its ``mode`` and, if given, the
    modification time ``when`` (from which its retention runs)."""
    refuse_symlink(path)
    os.chmod(path, mode)
    if when is not None:
        stamp = when.timestamp()
        os.utime(path, (stamp, stamp))


def remove_older_than(directory: Path, before: dt.datetime) -> int:
    """Delete the files (and links) of ``directory`` modified before ``before``; returns how many."""
    directory = Path(directory)
    if not directory.is_dir() or directory.is_symlink():
        return 0
    limit = before.timestamp()
    removed = 0
    for entry in os.scandir(directory):
        if entry.is_dir(follow_symlinks=False):
            continue
        if entry.stat(follow_symlinks=False).st_mtime < limit:
            os.unlink(entry.path)  # a link itself, never its target
            removed += 1
    return removed


def remove_day_dirs(root: Path, before: dt.date) -> int:
    """Delete the day folders ``root/<YYYY-MM-DD>`` of days before ``before``; returns how many."""
    root = Path(root)
    if not root.is_dir():
        return 0
    removed = 0
    for entry in os.scandir(root):
        try:
            day = dt.date.fromisoformat(entry.name)
        except ValueError:
            continue
        if day >= before:
            continue
        if entry.is_symlink() or not entry.is_dir(follow_symlinks=False):
            os.unlink(entry.path)
        else:
            shutil.rmtree(entry.path)  # removes links inside, never what they point to
        removed += 1
    return removed
