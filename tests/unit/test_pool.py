"""Telling an unreachable database from a problem with the data (no server needed)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from store.pool import transient, unreachable


@pytest.mark.parametrize(
    "error",
    [
        psycopg.OperationalError("server closed the connection unexpectedly"),
        PoolTimeout("couldn't get a connection after 30.00 sec"),
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionError("the database went away"),
    ],
)
def test_lost_connections_are_unreachable(error: Exception) -> None:
    assert unreachable(error) is True
    assert transient(error) is True


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.UniqueViolation("duplicate key value violates unique constraint"),
        psycopg.DataError("value out of range"),
        ValueError("a reading the store refuses"),
    ],
)
def test_data_problems_are_not(error: Exception) -> None:
    assert unreachable(error) is False
    assert transient(error) is False


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.DeadlockDetected("deadlock detected"),
        psycopg.errors.SerializationFailure("could not serialize access"),
    ],
)
def test_a_rolled_back_transaction_reached_the_server_and_may_pass_again(
    error: Exception,
) -> None:
    """OperationalErrors, but the server answered: the items of a batch are retried one by one
    (HJ 212), and the same work tried again (a notification's attempt recorded)."""
    assert unreachable(error) is False
    assert transient(error) is True
