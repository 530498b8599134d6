"""Writing files: one atomic-write helper for every output, and the checks made before any work.

Every file is written to a hidden temp file in its destination folder (same extension, so ffmpeg
and soundfile pick the right format) and renamed onto the destination only when complete: an
interrupted or failed run leaves the destination as it was and no partial file behind. The temp
name adds 8 characters (``.NAME.xxxxxx.EXT``) and is shortened to fit the file system's name limit.
Publishing without ``overwrite`` hard-links the temp file onto the destination, which never replaces:
a file that appeared there during the run (another run with the same ``-o``) is kept and the run fails.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from vssflow_cli.errors import OutputError

NAME_MAX = 255  # bytes per file name on every file system vssflow writes to (ext4, APFS, NTFS, ...)

_live_temps: set[Path] = set()
_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def live_temp_files() -> set[Path]:
    """Temp outputs being written right now (for signal handlers and tests)."""
    return set(_live_temps)


def temp_path_for(final: Path) -> Path:
    """``dir/.STEM.xxxxxx.SUFFIX`` beside ``final``; the stem is cut so the name fits NAME_MAX bytes."""
    tail = f".{secrets.token_hex(3)}{final.suffix}"
    stem = final.stem
    while len(os.fsencode(f".{stem}{tail}")) > NAME_MAX and stem:
        stem = stem[:-1]
    return final.with_name(f".{stem}{tail}")


def _publish(tmp: Path, final: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, final)
        return
    try:  # a hard link never replaces: a file created at `final` meanwhile is kept, and we fail
        os.link(tmp, final)
    except FileExistsError:
        raise OutputError(
            f"{final}: was created by something else while vssflow wrote it; kept it — pass --overwrite to replace it"
        ) from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if final.exists():  # no hard links here (FAT, some network shares): check, then rename
            raise OutputError(
                f"{final}: was created by something else while vssflow wrote it; kept it — pass --overwrite to "
                "replace it"
            ) from None
        os.replace(tmp, final)


def _no_space(final: Path) -> OutputError:
    return OutputError(f"{final}: cannot write: no space left on device; free some space there")


@contextlib.contextmanager
def atomic_output(final: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temp path beside ``final``; move it to ``final`` if the block succeeds.

    ``overwrite=False``: never replace a file that appeared at ``final`` while the block ran
    (OutputError instead). On any exception, KeyboardInterrupt and signals included, the temp
    file is removed.
    """
    final = Path(final)
    tmp = temp_path_for(final)
    _live_temps.add(tmp)
    try:
        try:
            yield tmp
        except OSError as e:  # the block's own writes (a JSON report, a copy): a full disk is the user's to fix
            if e.errno not in _NO_SPACE:
                raise
            raise _no_space(final) from e
        if not tmp.exists():
            raise OutputError(f"{final}: nothing was written; please report this")
        try:
            _publish(tmp, final, overwrite)
        except OSError as e:
            if e.errno in _NO_SPACE:
                raise _no_space(final) from e
            raise OutputError(f"{final}: cannot write ({e.strerror}); choose another output path") from e
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
        _live_temps.discard(tmp)


@contextlib.contextmanager
def audio_write_errors(path: Path, needed: int) -> Iterator[None]:
    """OutputError naming ``path`` for a failed open/write/close of the generated track (soundfile).

    libsndfile says only "System error." for a full disk, so a disk with less than the ``needed`` bytes
    free is taken as the cause ("no space left on device").
    """
    import soundfile as sf

    try:
        yield
    except (sf.LibsndfileError, OSError) as e:
        try:
            full = shutil.disk_usage(path.parent).free < needed
        except OSError:
            full = False
        why = "no space left on device" if full else str(e).strip().rstrip(".") or type(e).__name__
        tmp = " or set TMPDIR to a disk with room" if Path(tempfile.gettempdir()) in path.parents else ""
        raise OutputError(f"{path}: cannot write the generated track: {why}; free some space there{tmp}") from e


def write_text(path: str | os.PathLike[str], text: str, *, overwrite: bool = True) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (``overwrite``: as for :func:`atomic_output`)."""
    path = Path(path)
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def copy_file(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Copy ``src`` to ``dst`` atomically (nothing to do if they are the same file)."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and src.resolve() == dst.resolve():
        return dst
    with atomic_output(dst) as tmp:
        shutil.copyfile(src, tmp)
    return dst


def check_output_path(out: str | os.PathLike[str], *, overwrite: bool, inputs: tuple[Path, ...] = ()) -> Path:
    """Validate an output path before any work: folder exists and is writable, no clobbering."""
    out = Path(out)
    for src in inputs:
        with contextlib.suppress(OSError):
            if out.resolve() == Path(src).resolve():
                raise OutputError(f"{out}: output would replace the input; choose another output path")
    parent = out.parent
    if not parent.is_dir():
        raise OutputError(f"{out}: folder {parent} does not exist; create it or choose another output path")
    if out.is_dir():
        raise OutputError(f"{out}: is a folder; give a file name or use --out-dir")
    if out.exists() and not overwrite:
        raise OutputError(f"{out}: already exists; pass --overwrite to replace it or --skip-existing")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{out}: folder {parent} is not writable; choose another output path")
    return out
