"""The rate-limit contract on the in-memory backend alone, so it runs with no service reachable.

The tests are those of tests/integration/test_rate_limit_contract.py (imported, not copied);
only the backend parameter differs.
"""

from __future__ import annotations

import pytest

from tests.integration.test_rate_limit_contract import *  # noqa: F403  (the contract's tests)


@pytest.fixture(params=["memory"])
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)
