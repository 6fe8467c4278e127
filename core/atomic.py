"""Crash-safe writes: the one helper every file and directory publication goes through.

    atomic_write_bytes(path, data)   temp file beside ``path``, fsync, rename, fsync dir
    atomic_write_text / atomic_write_json
    staging_dir(target)              a fresh temporary directory beside ``target``
    publish_dir(staging, target)     fsync everything in ``staging``, then swap it in

A reader sees either the old file / directory or the new one, never a mix. Directory
swaps use Linux ``renameat2(RENAME_EXCHANGE)`` when the kernel and libc offer it: old
and new trade places in one atomic step, so ``target`` exists at every instant. Where
that call is missing (other systems, old kernels, some file systems) the swap is two
renames: ``target`` -> ``.NAME.previous``, staging -> ``target``. Between those two
renames (microseconds) ``target`` does not exist; a crash exactly there leaves both
copies complete on disk, and :func:`recover_swap` (called by the loaders and the
trainer) renames ``.NAME.previous`` back. Nothing finished is lost in either case.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import secrets
import shutil
from pathlib import Path

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_renameat2 = None
_exchange_ok = True   # set False after the first ENOSYS / EINVAL: use the fallback


def _libc_renameat2():
    global _renameat2
    if _renameat2 is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fn = libc.renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
            _renameat2 = fn
        except (OSError, AttributeError):
            _renameat2 = False
    return _renameat2


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Atomically swap two existing paths; False where the system cannot (no change)."""
    global _exchange_ok
    fn = _libc_renameat2() if _exchange_ok else None
    if not fn:
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, getattr(errno, "EOPNOTSUPP", errno.EINVAL)):
        _exchange_ok = False
        return False
    raise OSError(err, f"renameat2(RENAME_EXCHANGE) {a} <-> {b}: {os.strerror(err)}")


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a directory's entries (renames, new files) durable."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:   # some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike) -> None:
    """fsync every file, then every directory (deepest first), under ``root``."""
    dirs = []
    for here, _, files in os.walk(root):
        for name in files:
            p = os.path.join(here, name)
            if not os.path.islink(p):
                fsync_file(p)
        dirs.append(here)
    for d in reversed(dirs):
        fsync_dir(d)


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old or the new content only."""
    path = Path(path)
    tmp = _temp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj, **dumps_kwargs) -> Path:
    dumps_kwargs.setdefault("indent", 2)
    return atomic_write_text(path, json.dumps(obj, **dumps_kwargs))


def read_json_object(path: str | os.PathLike, error: type[Exception], what: str = "file") -> dict:
    """The JSON object in ``path`` (the reading side of :func:`atomic_write_json`). A file
    that is missing, not JSON, or not an object raises ``error`` naming the file and
    ``what`` its folder should be (e.g. "a checkpoint")."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path.parent} is not {what}: {path.name} is missing")
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path} is corrupt (not valid JSON: {e})") from None
    if not isinstance(obj, dict):
        raise error(f"{path} must hold a JSON object, got {type(obj).__name__}")
    return obj


def previous_path(target: Path) -> Path:
    """Where the fallback swap parks the old directory for an instant."""
    return target.with_name(f".{target.name}.previous")


def staging_dir(target: str | os.PathLike) -> Path:
    """A new empty directory beside ``target`` (same file system, so renames are atomic);
    stale staging directories of dead writers are removed first."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.staging-"
    for old in target.parent.glob(prefix + "*"):
        try:
            pid = int(old.name[len(prefix):].split("-")[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(old, ignore_errors=True)
    path = target.with_name(f"{prefix}{os.getpid()}-{secrets.token_hex(4)}")
    path.mkdir()
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_swap(target: str | os.PathLike) -> bool:
    """Undo a fallback swap that crashed between its two renames: ``target`` missing and
    ``.NAME.previous`` present -> rename it back. True when something was recovered."""
    target = Path(target)
    prev = previous_path(target)
    if not target.exists() and prev.is_dir():
        os.rename(prev, target)
        fsync_dir(target.parent)
        return True
    return False


def publish_dir(staging: str | os.PathLike, target: str | os.PathLike) -> Path:
    """fsync ``staging`` and everything in it, then make it ``target`` in one step; the
    old ``target`` (if any) is deleted afterwards. See the module docstring for the
    fallback's window."""
    staging, target = Path(staging), Path(target)
    fsync_tree(staging)
    recover_swap(target)
    if not target.exists():
        os.rename(staging, target)
        fsync_dir(target.parent)
        return target
    if exchange(staging, target):          # staging now holds the old directory
        fsync_dir(target.parent)
        shutil.rmtree(staging, ignore_errors=True)
        return target
    prev = previous_path(target)
    shutil.rmtree(prev, ignore_errors=True)
    os.rename(target, prev)                # window: target missing until the next rename
    os.rename(staging, target)
    fsync_dir(target.parent)
    shutil.rmtree(prev, ignore_errors=True)
    return target


def link_or_copy(src: Path, dst: Path) -> None:
    """Carry an existing file or directory into a staging directory: hard links where
    possible (same inode, so a file another process appends to keeps its appends),
    copies otherwise."""
    if src.is_dir() and not src.is_symlink():
        dst.mkdir(exist_ok=True)
        for child in src.iterdir():
            link_or_copy(child, dst / child.name)
        return
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)
