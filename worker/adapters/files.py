"""Files written once, whole, by exactly one process.

A print batch or a digest is claimed by its final name: the content is
written to a temporary file in the same directory and fsynced, then linked to
that name (``os.link`` fails if the name exists), so a reader never sees a
partial file and two workers never both publish the same one.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_temp", "publish", "fsync_dir", "create_new"]


def write_temp(directory: Path, data: bytes, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    try:
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


def create_new(path: Path, data: bytes) -> bool:
    """Write ``path`` whole with ``data`` unless it exists; True if this call created it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = write_temp(path.parent, data, path.suffix)
    try:
        publish(temp, path)
    except FileExistsError:
        return False
    finally:
        temp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return True
