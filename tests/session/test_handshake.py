"""The session handshake core, sans-I/O: encoding, decisions, and the one-error rule for untrusted bytes."""

from __future__ import annotations

import contextlib
import uuid

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aetherflow_sdk import AuthError, BadPacket
from aetherflow_sdk._identity import Identity
from aetherflow_sdk.session import (
    ClientHello,
    FrameKind,
    Permission,
    ResumeRequest,
    SessionAccept,
    SessionConfig,
    SessionManager,
    SessionReject,
    SessionState,
    TokenVerifier,
    issue_token,
)
from aetherflow_sdk.session._handshake import (
    client_result_untrusted,
    decode_client_message_untrusted,
    decode_frame_untrusted,
    decode_server_message_untrusted,
    encode_message,
    server_decide,
)
from tests.session._helpers import T0, counting_ids, fixed_random

OWNER = Identity.from_private_bytes(bytes(range(32)))
CLIENT_NODE = b"\x07" * 32


def _setup() -> tuple[SessionManager, TokenVerifier]:
    manager = SessionManager(SessionConfig(), new_session_id=counting_ids(), random_bytes=fixed_random(3))
    return manager, TokenVerifier([OWNER.node_id])


def _token(**kw: object) -> str:
    args: dict[str, object] = {
        "user": "alice",
        "document": "doc",
        "permission": "ro",
        "expires_in": 600,
        "now": T0,
    }
    args.update(kw)
    return issue_token(OWNER, **args)  # type: ignore[arg-type]


def _decide(
    manager: SessionManager, verifier: TokenVerifier, data: bytes, connection: object = 1, **kw: object
):
    return server_decide(
        data,
        now=kw.get("now", T0),  # type: ignore[arg-type]
        peer_id=kw.get("peer_id", CLIENT_NODE),  # type: ignore[arg-type]
        connection_id=connection,  # type: ignore[arg-type]
        verifier=verifier,
        manager=manager,
    )


def test_every_message_round_trips() -> None:
    sid = uuid.UUID(int=5)
    messages = [
        ClientHello(document="d", token="t"),
        ResumeRequest(document="d", session_id=sid, secret=b"s" * 32),
        SessionAccept(
            session_id=sid,
            user="u",
            permission=Permission.READ_ONLY,
            heartbeat_interval=15.0,
            ttl=60.0,
            secret=b"k" * 32,
            resumed=True,
        ),
        SessionReject(reason="expired", message="token expired at ..."),
    ]
    for message in messages:
        data = encode_message(message)
        decode = (
            decode_client_message_untrusted
            if isinstance(message, ClientHello | ResumeRequest)
            else decode_server_message_untrusted
        )
        assert decode(data) == message


def test_unknown_fields_ignored_bad_types_and_versions_rejected() -> None:
    base = {"v": 1, "k": "hello", "doc": "d", "tok": "t"}
    assert decode_client_message_untrusted(msgpack.packb({**base, "later": [1, 2]})) == ClientHello(
        document="d", token="t"
    )
    for bad in [
        {**base, "v": 2},
        {**base, "v": True},
        {**base, "doc": 5},
        {**base, "tok": b"t"},
        {**base, "k": "x"},
    ]:
        with pytest.raises(BadPacket):
            decode_client_message_untrusted(msgpack.packb(bad))
    accept = msgpack.unpackb(
        encode_message(
            SessionAccept(
                session_id=uuid.UUID(int=1),
                user="u",
                permission=Permission.READ_WRITE,
                heartbeat_interval=1,
                ttl=2,
                secret=b"x" * 32,
                resumed=False,
            )
        )
    )
    for key, value in [("perm", "admin"), ("hb", -1), ("hb", float("nan")), ("res", 1), ("sid", b"short")]:
        with pytest.raises(BadPacket):
            decode_server_message_untrusted(msgpack.packb({**accept, key: value}))


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=200))
def test_untrusted_decoders_raise_only_bad_packet(data: bytes) -> None:
    for decode in (decode_client_message_untrusted, decode_server_message_untrusted, decode_frame_untrusted):
        with contextlib.suppress(BadPacket):
            decode(data)


@settings(max_examples=200, deadline=None)
@given(
    fields=st.dictionaries(
        st.sampled_from(
            ["v", "k", "doc", "tok", "sid", "sec", "user", "perm", "hb", "ttl", "res", "why", "msg"]
        ),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(min_value=-(2**63), max_value=2**64 - 1),
            st.floats(),
            st.text(max_size=40),
            st.binary(max_size=40),
            st.sampled_from(["hello", "resume", "accept", "reject", "rw", "ro"]),
            st.just(1),
        ),
    )
)
def test_structured_junk_raises_only_bad_packet(fields: dict[str, object]) -> None:
    data = msgpack.packb(fields, use_bin_type=True)
    for decode in (decode_client_message_untrusted, decode_server_message_untrusted):
        with contextlib.suppress(BadPacket):
            decode(data)


def test_server_accepts_a_good_token() -> None:
    manager, verifier = _setup()
    decision = _decide(manager, verifier, encode_message(ClientHello(document="doc", token=_token())))
    assert decision.rejection is None and decision.session is not None
    assert decision.session.state is SessionState.CONNECTING and decision.session.holder == CLIENT_NODE
    accept = client_result_untrusted(decision.reply)
    assert accept.permission is Permission.READ_ONLY and accept.user == "alice" and not accept.resumed
    assert accept.heartbeat_interval == manager.config.heartbeat_interval


@pytest.mark.parametrize(
    ("hello", "reason"),
    [
        (ClientHello(document="doc", token=_token(expires_in=1)), "expired"),
        (ClientHello(document="other", token=_token()), "forbidden_document"),
        (ClientHello(document="doc", token=_token(holder=b"\x08" * 32)), "wrong_holder"),
        (ClientHello(document="doc", token="x.y.z"), "malformed"),
        (ResumeRequest(document="doc", session_id=uuid.UUID(int=9), secret=b"s" * 32), "unknown_session"),
    ],
)
def test_server_rejects_with_a_reason_the_client_turns_into_auth_error(
    hello: ClientHello, reason: str
) -> None:
    manager, verifier = _setup()
    decision = _decide(manager, verifier, encode_message(hello), now=T0 + 5)
    assert decision.session is None and decision.rejection is not None
    assert decision.rejection.reason == reason
    with pytest.raises(AuthError) as info:
        client_result_untrusted(decision.reply)
    assert info.value.reason == reason
    assert len(manager) == 0


def test_garbage_hello_is_rejected_as_malformed() -> None:
    manager, verifier = _setup()
    decision = _decide(manager, verifier, b"\xff\x00garbage")
    assert decision.rejection is not None and decision.rejection.reason == "malformed"


def test_resume_and_revocation() -> None:
    manager, verifier = _setup()
    first = _decide(
        manager, verifier, encode_message(ClientHello(document="doc", token=_token(token_id="j1")))
    )
    assert first.session is not None
    accept = client_result_untrusted(first.reply)
    manager.establish(accept.session_id, T0)
    manager.detach(accept.session_id, T0 + 1)
    resume = ResumeRequest(document="doc", session_id=accept.session_id, secret=accept.secret)
    wrong_doc = _decide(
        manager,
        verifier,
        encode_message(ResumeRequest(document="other", session_id=accept.session_id, secret=accept.secret)),
        connection=2,
        now=T0 + 2,
    )
    assert wrong_doc.rejection is not None and wrong_doc.rejection.reason == "forbidden_document"
    again = _decide(manager, verifier, encode_message(resume), connection=2, now=T0 + 2)
    assert again.session is not None and again.session.state is SessionState.ACTIVE
    second = client_result_untrusted(again.reply)
    assert second.resumed and second.session_id == accept.session_id and second.secret != accept.secret
    manager.detach(accept.session_id, T0 + 3)
    verifier.revoke("j1")
    revoked = _decide(
        manager,
        verifier,
        encode_message(ResumeRequest(document="doc", session_id=accept.session_id, secret=second.secret)),
        connection=3,
        now=T0 + 4,
    )
    assert revoked.rejection is not None and revoked.rejection.reason == "revoked"
    assert manager.get(accept.session_id) is None  # a revoked token's session ends


def test_frames() -> None:
    assert decode_frame_untrusted(b"\x00hello") == (FrameKind.APPLICATION, b"hello")
    for bad in [b"", b"\x09", b"\x02short", b"\x03"]:
        with pytest.raises(BadPacket):
            decode_frame_untrusted(bad)
