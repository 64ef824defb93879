"""Ids from URLs and forms: only numbers an id column can hold reach the database.

A bigger number is no id of anything, but handed to the database it is an error
(SQLite cannot bind past 64 bits, PostgreSQL's INTEGER stops at 32), so it must
be told apart as "not found" before any query.
"""

from werkzeug.routing import IntegerConverter

# PostgreSQL's INTEGER, the narrowest id column Posta runs on.
MAX_ID = 2**31 - 1


def parse_id(value) -> int | None:
    """Return value as an int an id column can hold, None for anything else."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if -MAX_ID <= number <= MAX_ID else None


def as_id(value) -> int:
    """Like parse_id, raising ValueError instead (for WTForms' coerce)."""
    number = parse_id(value)
    if number is None:
        raise ValueError(f"not an id: {value!r}")
    return number


class IdConverter(IntegerConverter):
    """`<int:...>` in routes: a number too big to be an id matches nothing (404)."""

    def __init__(self, map, *args, **kwargs):
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)
