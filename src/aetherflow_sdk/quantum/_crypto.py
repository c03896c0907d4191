"""Packet protection and key schedule.

* Key agreement: ephemeral X25519 (RFC 7748), one key pair per connection, so
  every connection has forward secrecy.
* Key derivation: HKDF-SHA256 (RFC 5869), salted with a hash of the handshake
  transcript, so keys are bound to everything both sides said.
* Sealing: ChaCha20-Poly1305 (RFC 8439). The 32-byte header is the associated
  data, so any change to it fails the tag; the nonce is the per-direction IV
  XOR the packet number (as QUIC does, RFC 9001 §5.3), so a nonce never repeats
  because a packet number never does.
* Address-validation cookies: HMAC-SHA256 over the client's address, CID and
  ephemeral key plus a timestamp, under a per-endpoint secret. The server
  keeps no state for a client until it returns a valid cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Final

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from aetherflow_sdk._errors import BadPacket

KEY_SIZE: Final = 32
IV_SIZE: Final = 12
PROTOCOL_LABEL: Final = b"aetherflow-quantum-v1"
COOKIE_LIFETIME: Final = 10.0  # seconds a RETRY cookie stays valid (QUIC servers use a few seconds)
_COOKIE_TIME = struct.Struct(">d")
_COOKIE_MAC_SIZE: Final = 16
COOKIE_SIZE: Final = _COOKIE_TIME.size + _COOKIE_MAC_SIZE
_ZERO_NONCE = bytes(IV_SIZE)


def hkdf(secret: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)


def transcript_hash(*parts: bytes) -> bytes:
    digest = hashlib.sha256(PROTOCOL_LABEL)
    for part in parts:
        digest.update(struct.pack(">I", len(part)))
        digest.update(part)
    return digest.digest()


class PacketProtection:
    """Seals and opens packets in one direction with one key and IV."""

    __slots__ = ("_aead", "_iv_int")

    def __init__(self, key: bytes, iv: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)
        self._iv_int = int.from_bytes(iv, "big")

    def _nonce(self, packet_number: int) -> bytes:
        return (self._iv_int ^ packet_number).to_bytes(IV_SIZE, "big")

    def seal(self, header: bytes, packet_number: int, plaintext: bytes) -> bytes:
        """header || ciphertext || tag."""
        return header + self._aead.encrypt(self._nonce(packet_number), plaintext, header)

    def open_untrusted(self, datagram: bytes, header_size: int, packet_number: int) -> bytes:
        """The plaintext of a sealed datagram; BadPacket if the tag does not verify."""
        header = datagram[:header_size]
        try:
            return self._aead.decrypt(self._nonce(packet_number), datagram[header_size:], header)
        except InvalidTag:
            raise BadPacket(
                "AEAD authentication failed (tampered, replayed under another key, or wrong key)"
            ) from None


def seal_once(key: bytes, header: bytes, plaintext: bytes) -> bytes:
    """Seal a handshake message under a key used for exactly one plaintext (so a fixed nonce is safe:
    retransmissions resend identical bytes)."""
    return header + ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, plaintext, header)


def open_once_untrusted(key: bytes, header: bytes, ciphertext: bytes) -> bytes:
    try:
        return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, ciphertext, header)
    except InvalidTag:
        raise BadPacket("handshake message failed authentication") from None


@attrs.frozen(kw_only=True)
class HandshakeKeys:
    """Keys that protect the identity proofs inside SERVER_HELLO and CLIENT_FINISH."""

    client: bytes
    server: bytes


@attrs.frozen(kw_only=True, eq=False)
class SessionKeys:
    """The per-direction packet protection of an established connection."""

    send: PacketProtection
    receive: PacketProtection


def derive_handshake_keys(shared_secret: bytes, transcript: bytes) -> HandshakeKeys:
    material = hkdf(shared_secret, transcript, b"af handshake", 2 * KEY_SIZE)
    return HandshakeKeys(client=material[:KEY_SIZE], server=material[KEY_SIZE:])


def derive_session_keys(shared_secret: bytes, transcript: bytes, *, is_client: bool) -> SessionKeys:
    material = hkdf(shared_secret, transcript, b"af session", 2 * (KEY_SIZE + IV_SIZE))
    client_key = material[:KEY_SIZE]
    client_iv = material[KEY_SIZE : KEY_SIZE + IV_SIZE]
    server_key = material[KEY_SIZE + IV_SIZE : 2 * KEY_SIZE + IV_SIZE]
    server_iv = material[2 * KEY_SIZE + IV_SIZE :]
    client = PacketProtection(client_key, client_iv)
    server = PacketProtection(server_key, server_iv)
    return SessionKeys(send=client, receive=server) if is_client else SessionKeys(send=server, receive=client)


def _address_bytes(address: tuple[str, int]) -> bytes:
    return f"{address[0]}|{address[1]}".encode()


def make_cookie(secret: bytes, address: tuple[str, int], binding: bytes, now: float) -> bytes:
    """A cookie proving the client received our RETRY at ``address``."""
    stamp = _COOKIE_TIME.pack(now)
    mac = hmac.new(secret, stamp + _address_bytes(address) + binding, hashlib.sha256).digest()
    return stamp + mac[:_COOKIE_MAC_SIZE]


def check_cookie(secret: bytes, cookie: bytes, address: tuple[str, int], binding: bytes, now: float) -> bool:
    """True if ``cookie`` is ours, for this address and binding, and not expired."""
    if len(cookie) != COOKIE_SIZE:
        return False
    (stamp,) = _COOKIE_TIME.unpack_from(cookie)
    if not (0.0 <= now - stamp <= COOKIE_LIFETIME):
        return False
    expected = hmac.new(
        secret, cookie[: _COOKIE_TIME.size] + _address_bytes(address) + binding, hashlib.sha256
    )
    return hmac.compare_digest(expected.digest()[:_COOKIE_MAC_SIZE], cookie[_COOKIE_TIME.size :])
