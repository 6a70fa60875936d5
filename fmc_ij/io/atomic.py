"""Atomic output: write to a temporary sibling, then rename, so a crash leaves no half-written file."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    The temporary name keeps the final suffixes (``.ome.tif``, ``.zarr``) so writers that look at
    the extension behave the same. On any exception the temporary file or folder is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(path)
    if is_dir:
        tmp.unlink()
    try:
        yield tmp
        if is_dir and path.exists():
            # Directories cannot be replaced atomically: move the old one aside first.
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            _replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def _new_temp(path: Path) -> Path:
    """A new empty file beside ``path`` (hidden, unique, the final suffixes kept), created with the permissions a
    plain ``open()`` gives (0666 minus the umask) in one call."""
    suffix = "".join(path.suffixes)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp{suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file beside {path}")


#: Overwriting a file at least this large frees its blocks in the background (see :func:`_replace`).
LARGE_FILE = 8 * 2**20


def _replace(tmp: Path, path: Path) -> None:
    """``os.replace(tmp, path)``, atomic; a large old file is released after the rename, off the caller's time.

    Renaming over a file frees the old file's blocks inside the rename (on ext4 with ``discard``, tens of ms for
    tens of MB: the bulk of a 32 MiB write). A second hard link keeps the old data alive through the rename,
    and a background thread drops it; readers see the old or the new file at every instant, as before.
    """
    aside = None
    try:
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode) and st.st_size >= LARGE_FILE:
            aside = path.with_name(f".{path.name}.old-{os.getpid()}-{time.monotonic_ns()}.tmp")
            os.link(path, aside)
    except OSError:  # no old file, or a file system without hard links: a plain rename
        aside = None
    os.replace(tmp, path)
    if aside is not None:
        threading.Thread(target=_unlink_quietly, args=(aside,), name="fmc-ij-unlink").start()


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically and return its path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
