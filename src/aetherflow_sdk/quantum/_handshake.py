"""The 3-way handshake: encrypted, mutually authenticated, stateless until proven.

::

    client                                              server
    INITIAL  {client CID, ephemeral X25519, params}  ->           (no state kept)
             <-  RETRY {cookie = MAC(addr, CID, key, time)}
    INITIAL  {... + cookie}                          ->           cookie valid: state created
             <-  SERVER_HELLO {server CID, ephemeral X25519,
                               seal_hs(server identity, signature, params)}
    CLIENT_FINISH {seal_hs(client identity, signature)} ->
             <-  DATA [HANDSHAKE_DONE]                  (both sides on session keys)

The ephemeral Diffie-Hellman gives forward secrecy; each side signs the
transcript hash with its Ed25519 identity key (SIGMA-style), so each learns the
other's node ID and a man in the middle cannot splice itself in. Identities
travel sealed under handshake keys, never in clear. INITIALs are padded to
1200 bytes and the RETRY is far smaller, so the server never sends more than
3x what it received before the address is validated (RFC 9000 §8.1).

Everything here is sans-I/O; randomness (ephemeral keys) is the only input
that is not passed in.
"""

from __future__ import annotations

import struct
from typing import Final

import attrs
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from aetherflow_sdk._errors import BadPacket, HandshakeFailed
from aetherflow_sdk._identity import Identity, format_node_id, verify_signature
from aetherflow_sdk.quantum._crypto import (
    SessionKeys,
    derive_handshake_keys,
    derive_session_keys,
    open_once_untrusted,
    seal_once,
    transcript_hash,
)
from aetherflow_sdk.quantum._wire import HEADER_SIZE, MIN_INITIAL_SIZE, Header, PacketType

CID_SIZE: Final = 16
PUBLIC_KEY_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64
_PARAMS = struct.Struct(">IIHB")
_SERVER_PROOF_LABEL: Final = b"quantum server proof"
_CLIENT_PROOF_LABEL: Final = b"quantum client proof"
MAX_COOKIE: Final = 64


@attrs.frozen(kw_only=True)
class TransportParameters:
    """What each side announces in the handshake."""

    max_message_size: int
    """Largest message the sender of these parameters accepts."""
    receive_window: int
    """Initial flow-control limit the sender of these parameters grants."""
    max_datagram_size: int
    """Largest UDP payload the sender of these parameters accepts."""
    fec: bool = False
    """The sender can decode FEC parity."""

    def encode(self) -> bytes:
        return _PARAMS.pack(
            self.max_message_size, self.receive_window, self.max_datagram_size, 1 if self.fec else 0
        )

    @classmethod
    def decode_untrusted(cls, data: bytes) -> TransportParameters:
        if len(data) != _PARAMS.size:
            raise BadPacket("transport parameters have the wrong size")
        mms, window, mds, flags = _PARAMS.unpack(data)
        if mds < MIN_INITIAL_SIZE or mms == 0 or window < mms:
            raise BadPacket("transport parameters out of range")
        return cls(max_message_size=mms, receive_window=window, max_datagram_size=mds, fec=bool(flags & 1))


def _public_bytes(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _exchange(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:
        # An all-zero shared secret (low-order point) is rejected by cryptography.
        raise BadPacket("peer ephemeral key is invalid") from None
    return shared


@attrs.frozen(kw_only=True)
class InitialMessage:
    """A parsed client INITIAL."""

    client_cid: bytes
    ephemeral_public: bytes
    params: TransportParameters
    cookie: bytes

    @property
    def binding(self) -> bytes:
        """What a cookie is bound to, besides the address."""
        return self.client_cid + self.ephemeral_public


_INITIAL_FIXED = CID_SIZE + PUBLIC_KEY_SIZE + _PARAMS.size + 1


def parse_initial_untrusted(datagram: bytes, header: Header) -> InitialMessage:
    """Parse a client INITIAL datagram (header already parsed)."""
    if len(datagram) < MIN_INITIAL_SIZE:
        raise BadPacket(f"INITIAL of {len(datagram)} bytes is not padded to {MIN_INITIAL_SIZE}")
    body = datagram[HEADER_SIZE:]
    if len(body) < _INITIAL_FIXED:
        raise BadPacket("INITIAL too short")
    client_cid = body[:CID_SIZE]
    if client_cid != header.destination_cid:
        raise BadPacket("INITIAL CID does not match its header")
    ephemeral = body[CID_SIZE : CID_SIZE + PUBLIC_KEY_SIZE]
    params = TransportParameters.decode_untrusted(body[CID_SIZE + PUBLIC_KEY_SIZE : _INITIAL_FIXED - 1])
    cookie_length = body[_INITIAL_FIXED - 1]
    if cookie_length > MAX_COOKIE or _INITIAL_FIXED + cookie_length > len(body):
        raise BadPacket("INITIAL cookie runs past the packet")
    cookie = body[_INITIAL_FIXED : _INITIAL_FIXED + cookie_length]
    return InitialMessage(client_cid=client_cid, ephemeral_public=ephemeral, params=params, cookie=cookie)


def build_retry(client_cid: bytes, cookie: bytes) -> bytes:
    """The stateless RETRY answer: header + cookie (well under 3x a padded INITIAL)."""
    return (
        Header(packet_type=PacketType.RETRY, destination_cid=client_cid).pack()
        + bytes((len(cookie),))
        + cookie
    )


def parse_retry_untrusted(datagram: bytes) -> bytes:
    body = datagram[HEADER_SIZE:]
    if not body or body[0] > MAX_COOKIE or len(body) != 1 + body[0]:
        raise BadPacket("malformed RETRY")
    return bytes(body[1:])


@attrs.frozen(kw_only=True, eq=False)
class HandshakeResult:
    """What a completed handshake yields."""

    peer_id: bytes
    """The peer's authenticated Ed25519 public key."""
    peer_cid: bytes
    """The connection ID the peer wants in our packets' headers."""
    peer_params: TransportParameters
    keys: SessionKeys


class ClientHandshake:
    """The client's half: builds INITIAL and CLIENT_FINISH, checks SERVER_HELLO."""

    def __init__(
        self,
        *,
        identity: Identity,
        client_cid: bytes,
        params: TransportParameters,
        pinned_peer_id: bytes | None,
    ) -> None:
        self._identity = identity
        self.client_cid = client_cid
        self._params = params
        self._pinned = pinned_peer_id
        self._ephemeral = X25519PrivateKey.generate()
        self._ephemeral_public = _public_bytes(self._ephemeral.public_key())
        self.cookie = b""
        self.result: HandshakeResult | None = None
        self.finish_packet: bytes | None = None

    def initial_packet(self) -> bytes:
        header = Header(packet_type=PacketType.INITIAL, destination_cid=self.client_cid).pack()
        body = (
            self.client_cid
            + self._ephemeral_public
            + self._params.encode()
            + bytes((len(self.cookie),))
            + self.cookie
        )
        packet = header + body
        return packet + bytes(MIN_INITIAL_SIZE - len(packet))

    def on_retry_untrusted(self, datagram: bytes) -> None:
        if self.cookie:
            raise BadPacket("second RETRY ignored")
        self.cookie = parse_retry_untrusted(datagram)

    def on_server_hello_untrusted(self, datagram: bytes) -> HandshakeResult:
        """Verify SERVER_HELLO; on success build CLIENT_FINISH and derive session keys.

        Raises BadPacket for malformed or unauthenticated bytes (dropped and counted), and
        HandshakeFailed when an authenticated server is not the one we pinned.
        """
        if self.result is not None:
            raise BadPacket("duplicate SERVER_HELLO")
        body = datagram[HEADER_SIZE:]
        clear_size = CID_SIZE + PUBLIC_KEY_SIZE
        if len(body) < clear_size + 16:
            raise BadPacket("SERVER_HELLO too short")
        server_cid = body[:CID_SIZE]
        server_ephemeral = body[CID_SIZE:clear_size]
        shared = _exchange(self._ephemeral, server_ephemeral)
        transcript = transcript_hash(
            self.client_cid, self._ephemeral_public, self._params.encode(), server_cid, server_ephemeral
        )
        keys = derive_handshake_keys(shared, transcript)
        aad = datagram[: HEADER_SIZE + clear_size]
        sealed = open_once_untrusted(keys.server, aad, body[clear_size:])
        if len(sealed) != PUBLIC_KEY_SIZE + SIGNATURE_SIZE + _PARAMS.size:
            raise BadPacket("SERVER_HELLO proof has the wrong size")
        server_id = sealed[:PUBLIC_KEY_SIZE]
        signature = sealed[PUBLIC_KEY_SIZE : PUBLIC_KEY_SIZE + SIGNATURE_SIZE]
        server_params_raw = sealed[PUBLIC_KEY_SIZE + SIGNATURE_SIZE :]
        if not verify_signature(server_id, signature, transcript + server_params_raw + _SERVER_PROOF_LABEL):
            raise BadPacket("SERVER_HELLO signature does not verify")
        server_params = TransportParameters.decode_untrusted(server_params_raw)
        if self._pinned is not None and server_id != self._pinned:
            raise HandshakeFailed(
                f"server identity {format_node_id(server_id)} is not the pinned "
                f"{format_node_id(self._pinned)}; check the address or the node ID you expect"
            )
        client_id = self._identity.node_id
        transcript2 = transcript_hash(transcript, server_id, signature, server_params_raw, client_id)
        proof = client_id + self._identity.sign(transcript2 + _CLIENT_PROOF_LABEL)
        header = Header(packet_type=PacketType.CLIENT_FINISH, destination_cid=server_cid).pack()
        self.finish_packet = seal_once(keys.client, header, proof)
        self.result = HandshakeResult(
            peer_id=server_id,
            peer_cid=server_cid,
            peer_params=server_params,
            keys=derive_session_keys(shared, transcript2, is_client=True),
        )
        return self.result


class ServerHandshake:
    """The server's half, created only after a valid cookie."""

    def __init__(
        self, *, identity: Identity, server_cid: bytes, params: TransportParameters, initial: InitialMessage
    ) -> None:
        self.initial = initial
        ephemeral = X25519PrivateKey.generate()
        ephemeral_public = _public_bytes(ephemeral.public_key())
        self._shared = _exchange(ephemeral, initial.ephemeral_public)
        self._transcript = transcript_hash(
            initial.client_cid,
            initial.ephemeral_public,
            initial.params.encode(),
            server_cid,
            ephemeral_public,
        )
        self._keys = derive_handshake_keys(self._shared, self._transcript)
        params_raw = params.encode()
        self._server_id = identity.node_id
        self._signature = identity.sign(self._transcript + params_raw + _SERVER_PROOF_LABEL)
        self._params_raw = params_raw
        clear = Header(packet_type=PacketType.SERVER_HELLO, destination_cid=initial.client_cid).pack()
        clear += server_cid + ephemeral_public
        # Sealed once and cached: a retransmission resends identical bytes (fixed nonce is safe).
        self.hello_packet = seal_once(
            self._keys.server, clear, self._server_id + self._signature + params_raw
        )
        self.server_cid = server_cid
        self.result: HandshakeResult | None = None

    def on_client_finish_untrusted(self, datagram: bytes) -> HandshakeResult:
        if self.result is not None:
            raise BadPacket("duplicate CLIENT_FINISH")
        header = datagram[:HEADER_SIZE]
        proof = open_once_untrusted(self._keys.client, header, datagram[HEADER_SIZE:])
        if len(proof) != PUBLIC_KEY_SIZE + SIGNATURE_SIZE:
            raise BadPacket("CLIENT_FINISH proof has the wrong size")
        client_id = proof[:PUBLIC_KEY_SIZE]
        transcript2 = transcript_hash(
            self._transcript, self._server_id, self._signature, self._params_raw, client_id
        )
        if not verify_signature(client_id, proof[PUBLIC_KEY_SIZE:], transcript2 + _CLIENT_PROOF_LABEL):
            raise BadPacket("CLIENT_FINISH signature does not verify")
        self.result = HandshakeResult(
            peer_id=client_id,
            peer_cid=self.initial.client_cid,
            peer_params=self.initial.params,
            keys=derive_session_keys(self._shared, transcript2, is_client=False),
        )
        return self.result
