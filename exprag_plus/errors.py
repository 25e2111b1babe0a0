"""The query errors every front end catches, apart from the query layer so that catching them costs
no import of it (the CLI's start-up)."""


class QueryError(ValueError):
    """Bad input to a query: the message says what, where and what to do (CLI exit 2)."""


class NoResult(LookupError):
    """A well-formed query that found nothing (CLI exit 1)."""
