"""Node identity: an Ed25519 key pair whose public key is the node's ID.

The same key identifies a node everywhere: the Quantum handshake signs with it,
tokens (EdDSA JWT) are issued with it, and relays address nodes by it.
A node ID is the 32 raw bytes of the public key; its text form is lowercase
base32 without padding (52 characters), safe in file names and URLs.
"""

from __future__ import annotations

import base64
from pathlib import Path

import attrs
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from aetherflow_sdk._errors import LocalProtocolError

NODE_ID_LENGTH = 32


def format_node_id(node_id: bytes) -> str:
    """The text form of a node ID (52 lowercase base32 characters)."""
    return base64.b32encode(node_id).decode("ascii").rstrip("=").lower()


def parse_node_id(text: str) -> bytes:
    """Parse the text form of a node ID; raises LocalProtocolError if it is not one."""
    cleaned = text.strip().upper()
    try:
        raw = base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))
    except (ValueError, TypeError) as exc:
        raise LocalProtocolError(f"{text!r} is not a node ID (expected 52 base32 characters)") from exc
    if len(raw) != NODE_ID_LENGTH:
        raise LocalProtocolError(f"{text!r} is not a node ID (decodes to {len(raw)} bytes, not 32)")
    return raw


@attrs.frozen(eq=False)
class Identity:
    """A node's Ed25519 key pair. ``node_id`` is the public key."""

    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> Identity:
        """A fresh random identity."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> Identity:
        """Rebuild an identity from the 32-byte raw private key."""
        if len(raw) != 32:
            raise LocalProtocolError(f"an Ed25519 private key is 32 bytes, got {len(raw)}")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    @classmethod
    def load_or_create(cls, path: Path) -> Identity:
        """Load the identity stored at ``path``, creating it (mode 0600) if absent."""
        if path.exists():
            return cls.from_private_bytes(path.read_bytes())
        identity = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_bytes(identity.private_bytes())
        return identity

    def private_bytes(self) -> bytes:
        """The 32-byte raw private key (keep it secret)."""
        return self.private_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def node_id(self) -> bytes:
        """The 32-byte public key: this node's ID."""
        return self.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def sign(self, message: bytes) -> bytes:
        """An Ed25519 signature of ``message`` (64 bytes)."""
        return self.private_key.sign(message)

    def __repr__(self) -> str:
        return f"Identity(node_id={format_node_id(self.node_id)})"


def verify_signature(node_id: bytes, signature: bytes, message: bytes) -> bool:
    """True if ``signature`` is ``node_id``'s Ed25519 signature of ``message``."""
    from cryptography.exceptions import InvalidSignature

    try:
        Ed25519PublicKey.from_public_bytes(node_id).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
