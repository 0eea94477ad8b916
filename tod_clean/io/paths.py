"""Paths tod-clean reads and writes: atomic outputs and where they really go, refusals (before any work)
of outputs that are inputs, each other, folders or unwritable, what a failed write means, and which inputs
can be read only once.

Outputs behave like a shell redirection. A regular file, a symbolic link to one, or a new name is written
to a temporary file beside the real target, which is renamed over it when complete: readers never see half
a file, and a link stays a link. Anything else (a device such as /dev/null, a FIFO, a socket, and every
path through /dev or /proc, such as /dev/stdout) cannot be replaced by a rename, so the finished output is
written through it in place.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from tod_clean.errors import InputError, TodCleanError
from tod_clean.io import STDIN
from tod_clean.io.formats.hub import datasets_cache, is_hub_ref, locate


def stream_kind(path: str) -> str | None:
    """What ``path`` is when its bytes can be read only once, or never end: standard input, a pipe
    (FIFO), a socket or a device; None for a file, a folder, an ``hf:`` dataset or a missing path."""
    if path == STDIN:
        return "standard input"
    if is_hub_ref(path):
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISFIFO(mode):
        return "a pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return None


_SYSTEM_FOLDERS = (Path("/dev"), Path("/proc"))


def _link_chain(path: Path) -> list[Path]:
    """``path`` and every symbolic link it passes through on the way to its target, as absolute paths."""
    chain = [Path(os.path.abspath(path))]
    for _ in range(40):  # the kernel's own limit on links followed
        current = chain[-1]
        if not current.is_symlink():
            break
        chain.append(Path(os.path.abspath(current.parent / os.readlink(current))))
    return chain


def output_target(dest: str | Path) -> tuple[Path, bool]:
    """Where an output really goes: ``(path, in_place)``.

    ``in_place`` is True for a destination written through as it is (a device, FIFO or socket, or a
    path through /dev or /proc); otherwise ``path`` is the real file a rename must replace (symbolic
    links resolved, so the link itself is kept).
    """
    chain = _link_chain(Path(dest))
    if any(folder == link or folder in link.parents for link in chain for folder in _SYSTEM_FOLDERS):
        return Path(dest), True
    try:
        mode: int | None = os.stat(dest).st_mode
    except OSError:  # a new file, or a link to one
        mode = None
    if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        return Path(dest), True
    return Path(os.path.realpath(dest)), False


# errno values that say the destination cannot take the bytes, whatever wrote them: never a bug of ours.
_WRITE_FAILURES = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def write_failure(error: BaseException) -> str | None:
    """Why a write failed, when ``error`` says the disk is full (or over quota, read-only, the file too
    big): an OSError's errno, or the "(os error N)" of a Rust library (safetensors, tokenizers). None
    for any other error, which keeps its traceback."""
    code = error.errno if isinstance(error, OSError) else None
    if code is None:
        found = re.search(r"\(os error (\d+)\)", str(error))
        code = int(found.group(1)) if found else None
    return os.strerror(code) if code in _WRITE_FAILURES else None


def writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


@contextlib.contextmanager
def atomic_output(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path; when the block succeeds, it becomes ``dest`` (see ``output_target``).

    On any failure, interruptions included, the temporary file is removed and ``dest`` is left as it was.
    """
    target, in_place = output_target(dest)
    if in_place:
        with tempfile.TemporaryDirectory(prefix="tod-clean-") as folder:
            tmp = Path(folder) / "output.tmp"
            try:
                yield tmp
            except Exception as error:
                reason = write_failure(error)
                if reason is None:
                    raise
                raise InputError(
                    f"{dest}: cannot write its temporary copy in {folder} ({reason}); free space there or "
                    "set TMPDIR"
                ) from None
            try:
                with open(tmp, "rb") as source, open(dest, "wb") as sink:
                    shutil.copyfileobj(source, sink)
            except OSError as error:
                raise InputError(f"{dest}: cannot write ({error.strerror})") from None
        return
    if not target.parent.is_dir():
        raise InputError(f"{dest}: the folder {target.parent} does not exist")
    try:
        handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as error:
        raise InputError(f"{dest}: cannot write in the folder {target.parent} ({error.strerror})") from None
    os.close(handle)
    tmp_path = Path(name)
    try:
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as error:
        tmp_path.unlink(missing_ok=True)
        if error.filename not in (str(tmp_path), str(target)) or error.strerror is None:
            # raised by the caller's block: ours to reword only when the disk refused the bytes
            reason = write_failure(error)
            if reason is None:
                raise
            raise InputError(f"{dest}: cannot write ({reason})") from None
        raise InputError(f"{dest}: cannot write ({error.strerror})") from None
    except BaseException as error:
        tmp_path.unlink(missing_ok=True)
        reason = None if isinstance(error, TodCleanError) else write_failure(error)
        if reason is None:
            raise
        raise InputError(f"{dest}: cannot write ({reason})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_destination(dest: str | Path) -> None:
    """Refuse, before any work is done, an output that cannot be written.

    A missing folder, a folder given as the output, a folder we may not write in, and a read-only file
    are refused; ``-`` (standard output) always passes.
    """
    if str(dest) == STDIN:
        return
    target, in_place = output_target(dest)
    if in_place:
        if not target.exists() or not writable(target):
            raise InputError(f"{dest}: cannot write there (not a writable file or device)")
        return
    shown = str(dest) if target == Path(os.path.abspath(dest)) else f"{dest} (-> {target})"
    if target.is_dir():
        raise InputError(f"{shown}: is a folder, expected a file name")
    if not target.parent.is_dir():
        raise InputError(f"{shown}: the folder {target.parent} does not exist")
    if not writable(target.parent):
        raise InputError(f"{shown}: the folder {target.parent} is not writable")
    if target.exists() and not writable(target):
        raise InputError(f"{shown}: the file is read-only; tod-clean does not replace it")


def check_suffix(dest: str | Path | None, option: str, suffix: str, what: str) -> None:
    """Refuse an output file named for another format than the one ``option`` writes (``--matrix x.csv``
    would hold ``.npy`` bytes); ``-``, devices and FIFOs, which have no format of their own, pass."""
    if dest is None or str(dest) == STDIN or output_target(dest)[1]:
        return
    if Path(dest).suffix.lower() != suffix:
        raise InputError(f"{dest}: {option} writes {what}; give a file name ending in {suffix}")


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same real path, or the same inode (hard links)."""
    try:
        if os.path.samefile(a, b):
            return True
    except OSError:  # one of them does not exist yet
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _inside(path: Path, folder: Path) -> bool:
    real_folder = Path(os.path.realpath(folder))
    return real_folder.is_dir() and real_folder in Path(os.path.realpath(path)).parents


def _collide(a: Path, b: Path) -> bool:
    """Two paths a command must not both read and write, or write twice.

    Devices, FIFOs and sockets (``/dev/null``, ``/dev/stdout``) are never replaced, so they may be named
    twice, as a shell allows.
    """
    if output_target(a)[1] and output_target(b)[1]:
        return False
    return _same_file(a, b) or _inside(a, b) or _inside(b, a)


def check_distinct_outputs(
    inputs: Mapping[str, str | Path | None], outputs: Mapping[str, str | Path | None]
) -> None:
    """Refuse, before any work, an output that is an input or another output of the same command.

    ``inputs`` and ``outputs`` map a name for messages (``--out``, ``the training file``) to a path;
    None is skipped. Paths are compared by real path and by file identity, so symbolic and hard links to
    an input are caught; a path inside a folder collides with the folder. ``-`` is standard input among
    the inputs and standard output among the outputs, where it may appear only once.
    """
    given_inputs = [
        (name, path, str(p) if is_hub_ref(str(p)) else None)
        for name, p in inputs.items()
        if p is not None and str(p) != STDIN and (path := _input_path(str(p))) is not None
    ]
    written: list[tuple[str, Path]] = []
    to_stdout: str | None = None
    for name, value in outputs.items():
        if value is None:
            continue
        if str(value) == STDIN:
            if to_stdout is not None:
                raise InputError(f"{to_stdout} and {name} both write to standard output; give one a file")
            to_stdout = name
            continue
        path = Path(value)
        for in_name, in_path, ref in given_inputs:
            if ref is not None and _inside(in_path, path):
                raise InputError(
                    f"{path}: {name} holds the Hugging Face datasets cache ({in_path}) that {in_name} ({ref}) "
                    "is read from; choose an output path outside it"
                )
            if ref is not None and _collide(path, in_path):
                raise InputError(
                    f"{path}: {name} is inside the Hugging Face datasets cache ({in_path}) that {in_name} "
                    f"({ref}) is read from, where it would be taken for a dataset; choose an output path "
                    "outside the cache"
                )
            if _collide(path, in_path):
                raise InputError(
                    f"{path}: {name} would overwrite {in_name} ({in_path}); choose another output path"
                )
        for out_name, out_path in written:
            if _collide(path, out_path):
                raise InputError(
                    f"{path}: {name} and {out_name} ({out_path}) are the same file; give each its own path"
                )
        written.append((name, path))


def _input_path(path: str) -> Path | None:
    """Where an input's data lie: the path, or for an ``hf:`` dataset the whole ``datasets`` cache (None
    when it is not cached: reading it will say so). Not just its prepared folder: a folder written beside
    it would be taken for a newer preparation (or, anywhere in the cache, for another dataset or
    configuration), and every later read of the dataset would read it."""
    if not is_hub_ref(path):
        return Path(path)
    try:
        locate(path)
    except InputError:
        return None
    return datasets_cache()


def check_outside_hub_cache(dest: str | Path) -> None:
    """Refuse a ``save_to_disk`` folder output inside the Hugging Face ``datasets`` cache, whatever the
    inputs: there it would be taken for a prepared hub dataset (see ``_input_path``)."""
    cache = datasets_cache()
    target = Path(os.path.abspath(dest))
    if _same_file(target, cache) or _inside(target, cache):
        raise InputError(
            f"{dest}: is inside the Hugging Face datasets cache ({cache}), where a dataset folder would be "
            "taken for a prepared hub dataset; choose an output folder outside the cache"
        )
