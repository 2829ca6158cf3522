"""Content-addressed, crash-safe storage of submitted label files (the ledger keeps paths and hashes only)."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

_CHUNK = 1 << 20
_SAFE_SUFFIX = re.compile(r"^(\.[A-Za-z0-9]{1,16}){1,2}$")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, as 64 lowercase hex digits.

    Raises
    ------
    FileNotFoundError
        ``path`` is not an existing file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: not an existing file: {path}")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_suffix(name: str) -> str:
    """The suffix a stored copy keeps: ``.nii.gz`` for gzipped files, else the last one (``.nrrd``, ``.mha``).

    Suffixes with characters other than letters and digits are dropped (``""``).
    """
    path = Path(name)
    suffixes = path.suffixes
    if not suffixes:
        return ""
    suffix = "".join(suffixes[-2:]) if suffixes[-1].lower() == ".gz" and len(suffixes) >= 2 else suffixes[-1]
    return suffix if _SAFE_SUFFIX.match(suffix) else ""


def store_submission_file(
    src: str | os.PathLike[str], dest_dir: str | os.PathLike[str]
) -> tuple[str, Path]:
    """Copy a submitted file to ``dest_dir/<sha256><suffix>``, atomically, before the ledger records it.

    The bytes are hashed while they are copied to a temporary file in ``dest_dir``, which is flushed to disk
    (``fsync``) and renamed into place (``os.replace``), and the folder is synced. A crash at any point leaves
    at most an orphan file, never a ledger row without its file. Storing the same content again is a no-op
    returning the same path.

    Parameters
    ----------
    src : path
        The label file the annotator submitted.
    dest_dir : path
        Folder of stored submissions (created if missing).

    Returns
    -------
    sha256 : str
        64 lowercase hex digits of the file's content.
    stored_path : Path
        ``dest_dir / (sha256 + suffix)``, where ``suffix`` is from :func:`file_suffix` (``.nii.gz`` kept whole).

    Raises
    ------
    FileNotFoundError
        ``src`` is not an existing file.
    """
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"src: not an existing file: {src}")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=".incoming-", suffix=".part", dir=dest_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, src.open("rb") as handle:
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        sha = digest.hexdigest()
        stored = dest_dir / f"{sha}{file_suffix(src.name)}"
        if stored.is_file() and stored.stat().st_size == tmp.stat().st_size:
            tmp.unlink()
        else:
            os.replace(tmp, stored)
            _fsync_dir(dest_dir)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return sha, stored


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
