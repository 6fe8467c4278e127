"""Crash-safe writes: the one helper every file and directory publication goes through.

    atomic_write_bytes(path, data)   temp file beside ``path``, fsync, rename, fsync dir
    atomic_write_text / atomic_write_json
    staging_dir(target)              a fresh temporary directory beside ``target``
    publish_dir(staging, target)     fsync everything in ``staging``, then swap it in

    save_errors(target, what)        context manager: every OS error of a save (also inside
                                     safetensors' and torch's writers) -> CheckpointError
                                     naming the cause (disk full, permission, read-only)
    check_free_space(target, bytes)  CheckpointError before writing when the file system
                                     holding ``target`` has too little room
    pid_alive(pid, start)            the one process-liveness rule: a live, non-zombie
                                     process, the same one when its start time is given
                                     (stale staging directories here; job workers and
                                     trainers in core.jobs)

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
import math
import os
import re
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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


JSON_MAX_BYTES = 16 * 2**20     # a config / metadata file: a few kB; far more is not one
JSON_MAX_DEPTH = 32             # nesting of a config: 4 levels; deeper is pathological


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:30]} does not fit a 64-bit float")
    return value


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def json_depth(obj) -> int:
    """Nesting depth of a parsed JSON value (a scalar: 0), without recursion."""
    depth, stack = 0, [(obj, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, (dict, list)):
            depth = max(depth, d)
            stack.extend((v, d + 1) for v in (node.values() if isinstance(node, dict) else node))
    return depth


def read_json_object(path: str | os.PathLike, error: type[Exception], what: str = "file",
                     max_bytes: int = JSON_MAX_BYTES, max_depth: int = JSON_MAX_DEPTH) -> dict:
    """The JSON object in ``path`` (the reading side of :func:`atomic_write_json`). A file
    that is missing, larger than ``max_bytes``, not JSON, nested deeper than ``max_depth``,
    holding a number Python cannot take (NaN, Infinity, 1e999, an integer of more than
    4,300 digits) or not an object raises ``error`` naming the file and ``what`` its folder
    should be (e.g. "a checkpoint")."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path.parent} is not {what}: {path.name} is missing")
    size = path.stat().st_size
    if size > max_bytes:
        raise error(f"{path} is {size:,} bytes; a file of this kind is at most {max_bytes:,}: it is not {what}'s")
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"), parse_float=_finite_float,
                         parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as e:   # JSONDecodeError, UnicodeDecodeError, huge numbers
        raise error(f"{path} is corrupt (not valid JSON: {str(e)[:200]})") from None
    except OSError as e:
        raise error(f"{path} cannot be read: {e.strerror or e}") from None
    if not isinstance(obj, dict):
        raise error(f"{path} must hold a JSON object, got {type(obj).__name__}")
    if json_depth(obj) > max_depth:
        raise error(f"{path} is nested more than {max_depth} levels deep: it is not {what}'s")
    return obj


# ------------------------------------------------------------------ save errors
_CAUSES = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
           errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
           errno.EROFS: "read-only file system", errno.EFBIG: "file too large for the file system",
           errno.EIO: "input/output error (a failing disk or a lost network file system)"}
_FIX = {errno.ENOSPC: "free some space or save elsewhere", errno.EDQUOT: "free some space or save elsewhere",
        errno.EACCES: "make the folder writable for this user or save elsewhere",
        errno.EPERM: "make the folder writable for this user or save elsewhere",
        errno.EROFS: "save to a writable file system"}
# what torch's zip writer (caffe2 inline_container.cc) says when a write fails: no errno
_TORCH_WRITE_FAILURE = ("inline_container.cc", "PytorchStreamWriter", "iostream error", "file write failed")
_STRERROR = {os.strerror(n).lower(): n for n in errno.errorcode}


def _existing(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes an unprivileged writer may still use on the file system holding ``path``
    (its nearest existing ancestor); None where the system cannot tell."""
    try:
        st = os.statvfs(_existing(Path(path)))
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def _diagnose(target: Path) -> int:
    """The likely errno of a failed write that reported none (torch's writer)."""
    where = _existing(target)
    try:
        st = os.statvfs(where)
        if st.f_flag & getattr(os, "ST_RDONLY", 1):
            return errno.EROFS
        if st.f_bavail * st.f_frsize < 2**20 or st.f_favail == 0:
            return errno.ENOSPC
    except (OSError, AttributeError):
        pass
    if not os.access(where if where.is_dir() else where.parent, os.W_OK):
        return errno.EACCES
    return errno.EIO


def os_errno_of(exc: BaseException, target: str | os.PathLike) -> int | None:
    """The OS error behind ``exc``: an ``OSError`` (or one in its cause chain), a
    ``SafetensorError`` ("... (os error 28)"), torch's ``RuntimeError`` from its zip writer
    ("... strerror: No space left on device", or none given: the file system is
    inspected); None when ``exc`` is not a write failure."""
    seen, hops = exc, 0
    while seen is not None and hops < 16:
        if isinstance(seen, OSError) and seen.errno:
            return seen.errno
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
        hops += 1
    text = str(exc)
    found = re.search(r"os error (\d+)", text)
    if found:
        return int(found.group(1))
    found = re.search(r"strerror: ([^\n]+)", text)
    if found and found.group(1).strip().lower() in _STRERROR:
        return _STRERROR[found.group(1).strip().lower()]
    if type(exc).__name__ == "SafetensorError" or any(m in text for m in _TORCH_WRITE_FAILURE):
        err = _diagnose(Path(target))
        # a short write ("unexpected pos 576 vs 534"): the device filled up while writing;
        # the writer's cleanup has freed the room again by the time we look
        return errno.ENOSPC if err == errno.EIO and "unexpected pos" in text else err
    return None


def save_error_message(err: int, target: str | os.PathLike, what: str = "the checkpoint") -> str:
    cause = _CAUSES.get(err) or os.strerror(err).lower()
    free = free_bytes(target)
    room = f" ({free / 2**20:,.1f} MB free there)" if free is not None and err in (errno.ENOSPC, errno.EDQUOT) else ""
    fix = _FIX.get(err, "check the disk and try again")
    return (f"cannot save {what} to {target}: {cause}{room}; anything saved there before is unchanged. "
            f"{fix[0].upper()}{fix[1:]}")


@contextmanager
def save_errors(target: str | os.PathLike, what: str = "the checkpoint", error: type[Exception] | None = None
                ) -> Iterator[None]:
    """Turn every OS error raised inside the block (directly, or wrapped by safetensors'
    or torch's writers) into ``error`` (default :class:`core.errors.CheckpointError`) with
    :func:`save_error_message`; other exceptions pass unchanged. The writers inside stage
    and swap (:func:`staging_dir` / :func:`publish_dir`), so what ``target`` held before
    is intact when this raises."""
    from core.errors import MinbertError
    if error is None:
        from core.errors import CheckpointError as error
    try:
        yield
    except (error, MinbertError):   # already a message for the user
        raise
    except Exception as e:   # noqa: BLE001 - filtered by os_errno_of, re-raised otherwise
        err = os_errno_of(e, target)
        if err is None:
            raise
        raise error(save_error_message(err, target, what)) from None


def check_free_space(target: str | os.PathLike, needed_bytes: int, what: str = "the checkpoint",
                     error: type[Exception] | None = None) -> None:
    """Raise ``error`` (default CheckpointError) before anything is written when the file
    system holding ``target`` is read-only or has less than ``needed_bytes`` (+ 5% and 1 MB
    of room for metadata) available; nothing when the system cannot tell."""
    if error is None:
        from core.errors import CheckpointError as error
    try:
        if os.statvfs(_existing(Path(target))).f_flag & getattr(os, "ST_RDONLY", 1):
            raise error(save_error_message(errno.EROFS, target, what))
    except (OSError, AttributeError):
        pass
    free = free_bytes(target)
    need = int(needed_bytes * 1.05) + 2**20
    if free is not None and free < need:
        raise error(f"cannot save {what} to {target}: no space left on device (it needs about "
                    f"{need / 2**20:,.0f} MB, {free / 2**20:,.1f} MB are free there); anything saved there "
                    f"before is unchanged. Free some space or save elsewhere")


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
        if pid != os.getpid() and not pid_alive(pid):
            shutil.rmtree(old, ignore_errors=True)
    path = target.with_name(f"{prefix}{os.getpid()}-{secrets.token_hex(4)}")
    path.mkdir()
    return path


# ------------------------------------------------------------ process liveness
# The one rule for "is this pid alive (and the process recorded)": stale staging
# directories here, job workers and trainers in core.jobs.
def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) from /proc, None if absent."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()  # the command name may contain spaces
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def pid_start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), None without /proc or process."""
    stat = proc_stat(pid)
    return stat[1] if stat else None


def pid_alive(pid: int | None, start: int | None = None) -> bool:
    """True if ``pid`` is a live (not zombie) process and, when ``start`` is given and
    /proc is available, the same process that was recorded (pid reuse is caught)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except (OverflowError, ValueError):
        return False
    stat = proc_stat(pid)
    if stat is None:
        return not Path("/proc/self/stat").exists()  # no /proc (macOS): trust os.kill
    state, started = stat
    if state in ("Z", "X"):
        return False
    return start is None or started == start


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
