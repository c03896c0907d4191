"""AuthError is one class: aetherflow_sdk re-exports aetherflow_sdk.session.AuthError, an AetherFlowError.

The public names of every package are pinned in tests/test_exports.py.
"""

from __future__ import annotations

import aetherflow_sdk
import aetherflow_sdk.session as session


def test_auth_error_is_exported_from_the_sdk() -> None:
    assert aetherflow_sdk.AuthError is session.AuthError
    assert issubclass(aetherflow_sdk.AuthError, aetherflow_sdk.AetherFlowError)
    error = aetherflow_sdk.AuthError("token expired at ...", reason="expired")
    assert error.reason == "expired" and str(error) == "token expired at ..."
