"""Attachment files on disk under POSTA_ATTACHMENTS_DIR, named by random keys."""

import errno
import logging
import os
import re
import secrets
import shutil
import tempfile
import time

from flask import current_app
from flask_babel import lazy_gettext as _l

logger = logging.getLogger(__name__)

CHUNK = 64 * 1024
# Files on their way into storage (spooled mail) wait in this subfolder of the
# attachments folder: the same filesystem, so moving them in is a rename.
SPOOL_FOLDER = "spool"
# A spool file older than this was left by a process that died mid-import.
SPOOL_MAX_AGE = 6 * 3600
# Keys are generated here only; anything else (e.g. "../x") is refused.
_KEY = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{32}$")


class StorageError(ValueError):
    """A file that cannot be stored, with a message for the person uploading it."""


def max_upload_bytes() -> int:
    """Return the size limit for the attachments of one message."""
    return current_app.config["POSTA_MAX_UPLOAD_MB"] * 1024 * 1024


def save_stream(stream, limit: int) -> tuple[str, int]:
    """Copy a file-like object to a new file; return (key, size).

    Raise StorageError, leaving nothing behind, when it exceeds `limit` bytes.
    """
    key = _new_key()
    path = path_for(key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".upload-")
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise StorageError(
                        _l(
                            "Attachments may be at most %(mb)d MB in total.",
                            mb=limit // (1024 * 1024),
                        )
                    )
                out.write(chunk)
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise
    return key, size


def save_bytes(data: bytes) -> str:
    """Write bytes to a new file and return its key."""
    key = _new_key()
    path = path_for(key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".mail-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise
    return key


def adopt_file(path: str) -> str:
    """Move an existing file (e.g. a spooled attachment) into storage; return its key.

    The file is renamed, not copied, when it is on the same filesystem (the
    spool folder lives under the attachments folder for that reason).
    """
    key = _new_key()
    target = path_for(key)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        os.rename(path, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_in(path, target)
    return key


def spool_dir() -> str:
    """Return (creating it) the folder for files on their way into storage."""
    path = os.path.join(current_app.config["POSTA_ATTACHMENTS_DIR"], SPOOL_FOLDER)
    os.makedirs(path, exist_ok=True)
    return path


def sweep_spool(max_age: float = SPOOL_MAX_AGE) -> None:
    """Remove spool files older than `max_age` seconds (left by a killed process)."""
    folder = os.path.join(current_app.config["POSTA_ATTACHMENTS_DIR"], SPOOL_FOLDER)
    cutoff = time.time() - max_age
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    for entry in entries:
        try:
            stale = entry.is_file() and entry.stat().st_mtime < cutoff
        except OSError:
            continue
        if stale:
            logger.info("removing stale spool file %s", entry.path)
            _unlink(entry.path)


def discard(paths) -> None:
    """Remove files outside storage (spool files), ignoring those already gone."""
    for path in paths:
        _unlink(path)


def path_for(key: str) -> str:
    """Return the absolute path of a stored file."""
    if not _KEY.match(key):
        raise ValueError(f"not a storage key: {key!r}")
    return os.path.join(current_app.config["POSTA_ATTACHMENTS_DIR"], key)


def delete(keys) -> None:
    """Remove stored files, ignoring those already gone."""
    for key in keys:
        _unlink(path_for(key))


def _copy_in(path: str, target: str) -> None:
    """Copy a file from another filesystem into place, then remove the original."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".mail-")
    try:
        with os.fdopen(fd, "wb") as out, open(path, "rb") as source:
            shutil.copyfileobj(source, out, CHUNK)
        os.replace(tmp, target)
    except BaseException:
        _unlink(tmp)
        raise
    _unlink(path)


def _new_key() -> str:
    name = secrets.token_hex(16)
    # Two-character folders keep any one directory small.
    return f"{name[:2]}/{name}"


def _unlink(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    except OSError:
        logger.warning("could not remove %s", path, exc_info=True)
