"""Only one SELECT runs over history; anything else is refused before DuckDB sees data."""

import pytest

from gossamer.events.errors import QueryError
from gossamer.events.sql import check_read_only


@pytest.mark.parametrize(
    "sql",
    ["SELECT 1", "select count(*) from users where type = 'UserAdded'", "EXPLAIN SELECT 1"],
)
def test_selects_pass(sql: str) -> None:
    check_read_only(sql, 1000)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("COPY (SELECT 1) TO '/tmp/x.csv'", "only SELECT queries run here, not COPY"),
        ("CREATE TABLE t AS SELECT 1", "not CREATE"),
        ("ATTACH '/tmp/x.db'", "not ATTACH"),
        ("INSTALL httpfs", "not LOAD"),
        ("SET enable_external_access = true", "not SET"),
        ("SELECT 1; SELECT 2", "one statement per query, not 2"),
        ("SELEC 1", "syntax error"),
    ],
)
def test_everything_else_is_refused(sql: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        check_read_only(sql, 1000)


def test_long_queries_are_refused() -> None:
    with pytest.raises(QueryError, match="longer than 10 characters"):
        check_read_only("SELECT 12345678", 10)
