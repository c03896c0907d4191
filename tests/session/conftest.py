"""Fixtures of the session tests."""

from __future__ import annotations

import pytest

from aetherflow_sdk._identity import Identity
from aetherflow_sdk.session import SessionManager
from tests.session._helpers import counting_ids, fixed_random


@pytest.fixture
def issuer() -> Identity:
    return Identity.from_private_bytes(bytes(range(32)))


@pytest.fixture
def manager() -> SessionManager:
    return SessionManager(new_session_id=counting_ids(), random_bytes=fixed_random(1))
