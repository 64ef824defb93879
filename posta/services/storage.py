"""Attachment files on disk under POSTA_ATTACHMENTS_DIR, named by random keys."""

import logging
import os
import re
import secrets
import tempfile

from flask import current_app
from flask_babel import lazy_gettext as _l

logger = logging.getLogger(__name__)

CHUNK = 64 * 1024
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


def path_for(key: str) -> str:
    """Return the absolute path of a stored file."""
    if not _KEY.match(key):
        raise ValueError(f"not a storage key: {key!r}")
    return os.path.join(current_app.config["POSTA_ATTACHMENTS_DIR"], key)


def delete(keys) -> None:
    """Remove stored files, ignoring those already gone."""
    for key in keys:
        _unlink(path_for(key))


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
