"""The errors every front end catches, apart from the modules that raise them so that catching them costs
no import of those (the CLI's start-up)."""


class RunNotFound(LookupError):
    """A run reference that names no run (or more than one)."""


class QueryError(ValueError):
    """Bad input to a query: the message says what, where and what to do (CLI exit 2)."""


class NoResult(LookupError):
    """A well-formed query that found nothing (CLI exit 1)."""
