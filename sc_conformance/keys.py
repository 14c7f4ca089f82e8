"""Private keys of key accounts: the user's key file, and throwaway keys.

A key account proves itself with the base64 of its private key text (PEM or
OpenSSH), so the suite reads the key file once, sends only that encoding, and makes
fresh keys where a check needs a well-formed key that belongs to nobody.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

THROWAWAY_KEY_BITS = 2048
"""Size of the keys the suite makes: the smallest RSA size a server should accept."""

_OPENSSH_HEADER = b"-----BEGIN OPENSSH PRIVATE KEY-----"


def is_private_key(key_text: bytes) -> bool:
    """Whether *key_text* is an unencrypted PEM or OpenSSH private key."""
    text = key_text.strip()
    try:
        if text.startswith(_OPENSSH_HEADER):
            serialization.load_ssh_private_key(text, password=None)
        elif text.startswith(b"-----BEGIN"):
            serialization.load_pem_private_key(text, password=None)
        else:
            return False
    except (TypeError, ValueError, UnsupportedAlgorithm):
        return False
    return True


def encode_key(key_text: bytes) -> str:
    """The ``key`` value of a key account: base64 of its private key text."""
    return base64.b64encode(key_text).decode("ascii")


def key_text_lines(key: str) -> list[str]:
    """The lines of the key text behind an encoded *key*, to redact a server that
    echoes the decoded key; nothing for a key that is not base64."""
    try:
        text = base64.b64decode(key, validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return []
    return [
        line.strip()
        for line in text.splitlines()
        if len(line.strip()) >= 16 and not line.startswith("-----")
    ]


def new_private_key() -> tuple[str, str]:
    """A fresh RSA key: (its ``key`` value, its public key PEM for users.json)."""
    private_key = rsa.generate_private_key(
        public_exponent=65537, key_size=THROWAWAY_KEY_BITS
    )
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    return encode_key(private_pem), public_pem.decode("ascii")
