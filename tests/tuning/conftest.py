"""A PostgreSQL server for the whole session when its binaries are installed (tests/tuning/postgres.py)."""
from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.tuning import postgres

_names = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a throwaway server's ``postgres`` database; skips with the reason when none can be started."""
    reason = postgres.missing()
    if reason:
        pytest.skip(reason)
    with postgres.postgres_server() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A new, empty database on that server."""
    return postgres.new_database(postgres_server, f"test{next(_names)}")
