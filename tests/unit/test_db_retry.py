"""Which database failures a transaction is retried on, and how the retries end."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from server.db import DatabaseUnavailable, is_transient, retry_transient


class DriverError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def wrapped(sqlstate: str) -> DBAPIError:
    return DBAPIError("SELECT 1", {}, DriverError(sqlstate))


@pytest.mark.parametrize("sqlstate", ["57P01", "57P03", "08006", "40P01", "40001"])
def test_shutdown_lost_connections_and_deadlocks_are_transient(sqlstate: str) -> None:
    assert is_transient(wrapped(sqlstate))


def test_a_wrong_statement_is_not() -> None:
    assert not is_transient(IntegrityError("INSERT", {}, DriverError("23505")))
    assert not is_transient(wrapped("42P01"))
    assert not is_transient(ValueError("not the database"))


async def test_a_transaction_is_retried_until_it_succeeds_and_gives_up_with_the_cause() -> None:
    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError())
        return "stored"

    assert await retry_transient(flaky, delays=(0, 0, 0)) == "stored"
    assert len(calls) == 3

    async def down() -> str:
        raise wrapped("57P03")

    with pytest.raises(DatabaseUnavailable) as caught:
        await retry_transient(down, delays=(0, 0))
    assert isinstance(caught.value.__cause__, DBAPIError)

    async def wrong() -> str:
        calls.append(1)
        raise wrapped("42P01")

    calls.clear()
    with pytest.raises(DBAPIError):
        await retry_transient(wrong, delays=(0, 0))
    assert len(calls) == 1  # not retried
