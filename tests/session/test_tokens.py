"""Tokens: every attack in the issue is refused with the right reason; random claim sets never crash."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aetherflow_sdk import AuthError, LocalProtocolError
from aetherflow_sdk._identity import Identity, format_node_id
from aetherflow_sdk.session import AuthReason, Permission, TokenVerifier, issue_token
from tests.session._helpers import T0

OWNER = Identity.from_private_bytes(bytes(range(32)))
STRANGER = Identity.from_private_bytes(bytes(range(1, 33)))
HOLDER = b"\x05" * 32


def _token(**overrides: Any) -> str:
    arguments: dict[str, Any] = {
        "user": "alice",
        "document": "doc-1",
        "permission": "rw",
        "expires_in": 3600,
        "now": T0,
    }
    arguments.update(overrides)
    return issue_token(OWNER, **arguments)


def _reason(verifier: TokenVerifier, token: str | bytes, document: str = "doc-1", now: float = T0) -> str:
    with pytest.raises(AuthError) as info:
        verifier.verify(token, document=document, now=now, holder=HOLDER)
    return info.value.reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def verifier() -> TokenVerifier:
    return TokenVerifier([OWNER.node_id])


def test_valid_token(verifier: TokenVerifier) -> None:
    claims = verifier.verify(_token(permission="ro"), document="doc-1", now=T0 + 10, holder=HOLDER)
    assert claims.user == "alice" and claims.permission is Permission.READ_ONLY
    assert claims.issuer == OWNER.node_id and claims.expires_at == T0 + 3600
    assert claims.holder is None


def test_wildcard_document(verifier: TokenVerifier) -> None:
    claims = verifier.verify(_token(document="*"), document="any-doc", now=T0)
    assert claims.document == "*"


def test_forged_signature(verifier: TokenVerifier) -> None:
    header, payload, signature = _token().split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[0] ^= 0x01
    assert _reason(verifier, f"{header}.{payload}.{_b64(bytes(raw))}") == AuthReason.BAD_SIGNATURE
    # Claims changed after signing (perm ro -> rw) no longer match the signature.
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["perm"] = "rw" if claims["perm"] == "ro" else "ro"
    tampered = f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"
    assert _reason(verifier, tampered) == AuthReason.BAD_SIGNATURE
    # Signed by someone else but claiming to be the owner.
    impostor = jwt.encode(
        jwt.decode(_token(), options={"verify_signature": False}), STRANGER.private_key, algorithm="EdDSA"
    )
    assert _reason(verifier, impostor) == AuthReason.BAD_SIGNATURE


def test_expired_token(verifier: TokenVerifier) -> None:
    token = _token(expires_in=60)
    with pytest.raises(AuthError, match=r"token expired at 2027-01-15 \d\d:\d\d:\d\d UTC") as info:
        verifier.verify(token, document="doc-1", now=T0 + 60)
    assert info.value.reason == AuthReason.EXPIRED


def test_wrong_document(verifier: TokenVerifier) -> None:
    assert _reason(verifier, _token(document="doc-1"), document="doc-2") == AuthReason.FORBIDDEN_DOCUMENT


def test_unknown_issuer(verifier: TokenVerifier) -> None:
    token = issue_token(STRANGER, user="eve", document="doc-1", permission="rw", expires_in=60, now=T0)
    assert _reason(verifier, token) == AuthReason.UNKNOWN_ISSUER


def test_document_creator_is_trusted_for_its_document_only() -> None:
    verifier = TokenVerifier()
    verifier.trust_for_document("doc-1", OWNER.node_id)
    assert verifier.verify(_token(), document="doc-1", now=T0).user == "alice"
    assert _reason(verifier, _token(document="*"), document="doc-2") == AuthReason.UNKNOWN_ISSUER


def test_revoked_jti(verifier: TokenVerifier) -> None:
    token = _token(token_id="jti-42")
    verifier.verify(token, document="doc-1", now=T0)
    verifier.revoke("jti-42")
    assert verifier.is_revoked("jti-42")
    assert _reason(verifier, token) == AuthReason.REVOKED


def test_alg_none(verifier: TokenVerifier) -> None:
    claims = jwt.decode(_token(), options={"verify_signature": False})
    unsigned = (
        f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{_b64(json.dumps(claims).encode())}."
    )
    assert _reason(verifier, unsigned) == AuthReason.BAD_SIGNATURE


def test_alg_switched_to_hs256_with_the_public_key_as_secret(verifier: TokenVerifier) -> None:
    claims = jwt.decode(_token(), options={"verify_signature": False})
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    import hashlib
    import hmac

    for secret in (OWNER.node_id, format_node_id(OWNER.node_id).encode()):
        mac = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
        assert _reason(verifier, f"{header}.{body}.{_b64(mac)}") == AuthReason.BAD_SIGNATURE


@pytest.mark.parametrize("cut", [1, 10, 50, 100, -1, -10, -40])
def test_truncated_token(verifier: TokenVerifier, cut: int) -> None:
    token = _token()
    truncated = token[:cut]
    assert _reason(verifier, truncated) in {AuthReason.MALFORMED, AuthReason.BAD_SIGNATURE}
    if truncated.count(".") < 2:
        assert _reason(verifier, truncated) == AuthReason.MALFORMED


def test_ten_megabytes_of_garbage_is_refused_unread(
    verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    import random

    from aetherflow_sdk.session import _tokens

    def must_not_parse(*args: object) -> None:
        raise AssertionError("an oversized token was parsed")

    # Behaviour, not speed: the size check comes before any decoding (speed is the benchmark's job).
    monkeypatch.setattr(_tokens, "_decode_json_segment", must_not_parse)
    monkeypatch.setattr(_tokens.jwt, "decode", must_not_parse)
    garbage = random.Random(10).randbytes(10 * 1024 * 1024)
    assert _reason(verifier, garbage) == AuthReason.MALFORMED
    assert _reason(verifier, "a." * (5 * 1024 * 1024)) == AuthReason.MALFORMED
    monkeypatch.undo()
    assert _reason(verifier, garbage[:4096]) == AuthReason.MALFORMED  # just under the limit: parsed, refused


def test_holder_binding(verifier: TokenVerifier) -> None:
    token = _token(holder=HOLDER)
    assert verifier.verify(token, document="doc-1", now=T0, holder=HOLDER).holder == HOLDER
    with pytest.raises(AuthError) as info:
        verifier.verify(token, document="doc-1", now=T0, holder=b"\x06" * 32)
    assert info.value.reason == AuthReason.WRONG_HOLDER


def test_future_issue_time(verifier: TokenVerifier) -> None:
    assert _reason(verifier, _token(now=T0 + 3600), now=T0) == AuthReason.NOT_YET_VALID


@pytest.mark.parametrize("expires_in", [float("inf"), 2.0**53, 2**53 - T0, 1e300])
def test_an_expiry_no_verifier_can_read_is_refused_at_issue(expires_in: float) -> None:
    # exp >= 2**53 would be refused by every verifier as malformed; inf used to overflow math.ceil.
    with pytest.raises(LocalProtocolError, match="too far ahead"):
        _token(expires_in=expires_in)


def test_the_latest_readable_expiry_is_issued(verifier: TokenVerifier) -> None:
    token = _token(expires_in=2**53 - 1 - T0)
    assert verifier.verify(token, document="doc-1", now=T0, holder=HOLDER).expires_at == 2**53 - 1


def _sign(claims: dict[str, Any]) -> str:
    # By hand (RFC 7515 §5.1): pyjwt's encoder refuses some ill-typed claims we want to send.
    header = _b64(json.dumps({"alg": "EdDSA", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    return f"{header}.{body}.{_b64(OWNER.sign(f'{header}.{body}'.encode()))}"


JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=300),
    st.lists(st.integers(), max_size=3),
)
CLAIM_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "sub": st.one_of(st.text(min_size=1, max_size=20), JSON_VALUES),
    "doc": st.one_of(st.sampled_from(["doc-1", "doc-2", "*"]), JSON_VALUES),
    "perm": st.one_of(st.sampled_from(["rw", "ro", "admin"]), JSON_VALUES),
    "iss": st.one_of(
        st.just(format_node_id(OWNER.node_id)), st.just(format_node_id(STRANGER.node_id)), JSON_VALUES
    ),
    "exp": st.one_of(st.integers(min_value=int(T0) - 100, max_value=int(T0) + 100), JSON_VALUES),
    "iat": st.one_of(st.integers(min_value=int(T0) - 100, max_value=int(T0) + 100), JSON_VALUES),
    "jti": st.one_of(st.sampled_from(["j1", "revoked"]), JSON_VALUES),
    "nid": st.one_of(st.just(format_node_id(HOLDER)), JSON_VALUES),
}


@st.composite
def claim_sets(draw: st.DrawFn) -> dict[str, Any]:
    """Random claims, or a valid set with a few claims replaced or removed (to reach the later checks)."""
    if draw(st.booleans()):
        names = draw(st.sets(st.sampled_from(sorted(CLAIM_VALUES)), max_size=len(CLAIM_VALUES)))
        claims = {name: draw(CLAIM_VALUES[name]) for name in names}
    else:
        claims = {
            "sub": "alice", "doc": "doc-1", "perm": "rw", "iss": format_node_id(OWNER.node_id),
            "exp": int(T0) + 60, "iat": int(T0), "jti": "j1",
        }  # fmt: skip
        for name in draw(st.sets(st.sampled_from(sorted(CLAIM_VALUES)), max_size=3)):
            if draw(st.booleans()):
                claims[name] = draw(CLAIM_VALUES[name])
            else:
                claims.pop(name, None)
    if draw(st.booleans()):
        claims[draw(st.text(min_size=1, max_size=5))] = draw(JSON_VALUES)  # unknown claims are ignored
    return claims


def _expected_reason(claims: dict[str, Any]) -> str | None:
    """An independent statement of the rules, for claims signed by OWNER (None = accepted)."""

    def text(name: str) -> bool:
        value = claims.get(name)
        return isinstance(value, str) and 1 <= len(value) <= 256

    def whole(name: str) -> bool:
        value = claims.get(name)
        return type(value) is int and 0 <= value < 2**53

    node_ids = {format_node_id(OWNER.node_id), format_node_id(STRANGER.node_id), format_node_id(HOLDER)}
    if not text("iss") or claims["iss"] not in node_ids or not text("doc"):
        return AuthReason.MALFORMED
    if claims["iss"] != format_node_id(OWNER.node_id):
        return AuthReason.UNKNOWN_ISSUER
    if not (
        text("sub") and claims.get("perm") in ("rw", "ro") and whole("exp") and whole("iat") and text("jti")
    ):
        return AuthReason.MALFORMED
    if "nid" in claims and (not text("nid") or claims["nid"] not in node_ids):
        return AuthReason.MALFORMED
    if claims["exp"] <= T0:
        return AuthReason.EXPIRED
    if claims["iat"] > T0 + 60:
        return AuthReason.NOT_YET_VALID
    if claims["jti"] == "revoked":
        return AuthReason.REVOKED
    if claims["doc"] not in ("doc-1", "*"):
        return AuthReason.FORBIDDEN_DOCUMENT
    if "nid" in claims and claims["nid"] != format_node_id(HOLDER):
        return AuthReason.WRONG_HOLDER
    return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(claims=claim_sets())
def test_random_claim_sets_are_accepted_only_when_valid(claims: dict[str, Any]) -> None:
    verifier = TokenVerifier([OWNER.node_id], revoked=["revoked"])
    expected = _expected_reason(claims)
    try:
        result = verifier.verify(_sign(claims), document="doc-1", now=T0, holder=HOLDER)
    except AuthError as exc:
        assert exc.reason == expected, (claims, str(exc))
        return
    assert expected is None, claims
    assert (result.user, result.permission.value, result.token_id) == (
        claims["sub"],
        claims["perm"],
        claims["jti"],
    )
    assert result.expires_at == claims["exp"] and result.issued_at == claims["iat"]


@settings(max_examples=200, deadline=None)
@given(data=st.one_of(st.binary(max_size=600), st.text(max_size=600)))
def test_any_input_is_refused_with_a_reason_code_and_nothing_else(data: bytes | str) -> None:
    verifier = TokenVerifier([OWNER.node_id])
    with pytest.raises(AuthError) as info:
        verifier.verify(data, document="doc-1", now=T0)
    assert info.value.reason in {r.value for r in AuthReason}


@settings(max_examples=100, deadline=None)
@given(
    user=st.text(min_size=1, max_size=256),
    document=st.text(min_size=1, max_size=256),
    permission=st.sampled_from(list(Permission)),
    lifetime=st.integers(min_value=1, max_value=10**8),
    bound=st.booleans(),
)
def test_valid_claim_sets_round_trip(
    user: str, document: str, permission: Permission, lifetime: int, bound: bool
) -> None:
    verifier = TokenVerifier([OWNER.node_id])
    token = issue_token(
        OWNER,
        user=user,
        document=document,
        permission=permission,
        expires_in=lifetime,
        now=T0,
        holder=HOLDER if bound else None,
    )
    claims = verifier.verify(token, document=document, now=T0, holder=HOLDER)
    assert (claims.user, claims.document, claims.permission) == (user, document, permission)
    assert claims.expires_at == T0 + lifetime and claims.issued_at == T0
    assert claims.holder == (HOLDER if bound else None)
