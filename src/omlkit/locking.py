"""One process at a time per run or sweep point: an advisory ``flock`` on a small lock file.

The kernel drops the lock when its holder exits, crashed or not, so a stale lock cannot outlive a
killed run. The file itself stays (deleting it would race with a second process opening it) and holds
the holder's pid, which the refusal names. Where ``fcntl`` does not exist (Windows) nothing is locked.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]


class LockHeld(Exception):
    """Another process holds the lock; ``pid`` is the holder's, when it could be read."""

    def __init__(self, path: Path, pid: int | None) -> None:
        super().__init__(f"{path} is held by {holder_name(pid)}")
        self.path = path
        self.pid = pid


def holder_name(pid: int | None) -> str:
    """``process <pid>``, or ``another process`` when the lock file names none."""
    return f"process {pid}" if pid else "another process"


def _holder(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
        return int(text) if text.isdigit() else None
    except (OSError, UnicodeDecodeError):
        return None


@contextlib.contextmanager
def exclusive(
    path: str | os.PathLike,
    enabled: bool = True,
    busy: Callable[[int | None], Exception] | None = None,
    wait: bool = False,
) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created with its folder) for the block.

    When another process holds it, raises at once ``busy(holder pid)`` (default :class:`LockHeld`), or
    with ``wait`` blocks until the holder lets go (a second builder of the same model waits for the
    first). Exceptions from inside the block pass through untouched. ``enabled=False`` (a non-main
    distributed rank, say) locks nothing.
    """
    if not enabled or fcntl is None:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder(fd)
            raise (busy(pid) if busy else LockHeld(path, pid)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
