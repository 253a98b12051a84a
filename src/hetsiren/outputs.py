"""Where commands write: one check of every output before the work starts, atomic writes that
honour the umask, and operating-system errors as one line.

Every command calls :func:`check_outputs` with the files (or folders) it will write and the
files it reads, before any compute: an output that is one of the inputs (after resolving
symlinks and ``..``), a folder where a file is expected (or the reverse), or a place that
cannot be written is refused there with a :class:`~hetsiren.errors.UserInputError`.

Files are then written through :func:`atomic_path`: a temporary file beside the target, moved
onto it in one ``os.replace``, so a crash leaves the previous file (or nothing), never half a
file. The temporary file gets the mode a plain ``open`` would give (``0666`` minus the umask),
not ``mkstemp``'s private ``0600``: lab members sharing a group can read each other's results.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from hetsiren.errors import UserInputError

__all__ = [
    "TMP_MARK",
    "atomic_path",
    "check_outputs",
    "describe_os_error",
    "file_mode",
    "folder_mode",
    "honour_umask",
]

# Temporary files of atomic_path are named ".NAME.XXXXXXXX.tmp.SUFFIX": this mark finds the
# ones a killed process left behind.
TMP_MARK = ".tmp"


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once, at import (single-threaded): os.umask can only be read by setting it.
_UMASK = _read_umask()


def file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: ``0666`` minus the umask."""
    return 0o666 & ~_UMASK


def folder_mode() -> int:
    """The mode ``mkdir`` would give a new folder: ``0777`` minus the umask."""
    return 0o777 & ~_UMASK


def honour_umask(path: str | Path, folder: bool = False) -> None:
    """Give ``path`` (made by ``mkstemp``/``mkdtemp``, private) the umask's usual mode."""
    os.chmod(path, folder_mode() if folder else file_mode())


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; move it onto ``path`` on success.

    The temporary file keeps ``path``'s suffix (some writers look at it) and has the mode a
    plain ``open`` would give. On an exception it is deleted and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"{TMP_MARK}{path.suffix}",
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        honour_umask(tmp_path)
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def describe_os_error(exc: OSError) -> str:
    """One line for an operating-system error: the file, then what went wrong."""
    what = exc.strerror or str(exc)
    hint = {errno.ENOSPC: " (the disk is full)", errno.EROFS: " (read-only file system)",
            errno.EDQUOT: " (disk quota exceeded)"}.get(exc.errno or 0, "")
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    return f"{' -> '.join(names)}: {what}{hint}" if names else f"{what}{hint}"


def _resolved(path: str | Path) -> Path:
    # realpath resolves every symlink of the existing part and ".." lexically after it.
    return Path(os.path.realpath(os.path.expanduser(str(path))))


def _same_file(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def _is_input(out: str | Path, original: str | Path) -> str:
    if str(out) == str(original):
        return "is one of the files this command reads"
    return f"is {original}, one of the files this command reads"


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable_folder(folder: Path, shown: str) -> None:
    """``folder`` (or the nearest folder above it that exists) must accept new files."""
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise UserInputError(f"{shown}: cannot be created: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".hetsiren-write-check."):
            pass
    except OSError as exc:
        raise UserInputError(f"{shown}: cannot write in {existing}: "
                             f"{describe_os_error(exc).split(': ', 1)[-1]}") from exc


def check_outputs(files: Iterable[str | Path] = (), inputs: Iterable[str | Path | None] = (),
                  folders: Iterable[str | Path] = ()) -> None:
    """Refuse, before any work, outputs that would destroy an input or cannot be written.

    Args:
        files: files the command will write (each replaced atomically).
        inputs: files the command reads (``None`` entries are ignored); an output that is the
            same file, through a symlink, ``..`` or a hard link, is refused.
        folders: folders the command will create or write into.

    Raises:
        UserInputError: naming the output and the reason, in one line.
    """
    read = [(p, _resolved(p)) for p in inputs if p is not None and str(p) != ""]
    for out in folders:
        target = _resolved(out)
        for original, source in read:
            if _same_file(target, source):
                raise UserInputError(f"{out}: {_is_input(out, original)}; choose another "
                                     "output folder")
        if target.exists() and not target.is_dir():
            raise UserInputError(f"{out}: is a file; expected a folder")
        _check_writable_folder(target, str(out))
    for out in files:
        target = _resolved(out)
        for original, source in read:
            if _same_file(target, source):
                raise UserInputError(
                    f"{out}: {_is_input(out, original)}; writing the output there would "
                    "destroy it: choose another output name")
        if target.is_dir():
            raise UserInputError(f"{out}: is a folder; expected a file name")
        _check_writable_folder(target.parent, str(out))
