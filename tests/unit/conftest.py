"""Fixtures shared by the unit tests."""

import pytest

from tests.unit.evidence_helpers import Keys, make_keys


@pytest.fixture
def keys() -> Keys:
    """A fresh device signing key and force key pair."""
    return make_keys()
