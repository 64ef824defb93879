"""Encryption of secrets at rest with a key kept under instance/, never in the DB."""

import os

from cryptography.fernet import Fernet, InvalidToken


class SecretBox:
    """Encrypt and decrypt short secrets such as mailbox passwords and tokens."""

    def __init__(self, key: bytes):
        self._fernet = Fernet(key)

    def encrypt(self, plaintext: str) -> bytes:
        """Return the ciphertext of a secret."""
        return self._fernet.encrypt(plaintext.encode())

    def decrypt(self, token: bytes) -> str:
        """Return the plaintext, or raise ValueError when the key cannot read it."""
        try:
            return self._fernet.decrypt(token).decode()
        except InvalidToken as exc:
            raise ValueError("secret cannot be decrypted with this key") from exc


def load_or_create_key(path: str, generate) -> bytes:
    """Read a key file, creating it with owner-only permissions on first use."""
    if os.path.exists(path):
        with open(path, "rb") as f:
            return f.read().strip()

    key = generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key
