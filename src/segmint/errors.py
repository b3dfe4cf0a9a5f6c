"""The one exception hierarchy of segmint.

Every error a user can cause derives from :class:`UserInputError`; the CLI turns
those into one red line on stderr and exit code 2. Anything else deriving from
:class:`SegmintError` is a failure of segmint or its environment.
"""

from __future__ import annotations


class SegmintError(Exception):
    """Base class of every error raised by segmint."""


class UserInputError(SegmintError):
    """Something the user supplied is wrong: a file, an option, a value.

    Parameters
    ----------
    message
        What is wrong, in one sentence.
    where
        Where it is wrong: a file, ``file:line``, a column or a key path.
    """

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.message = message
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class ConfigError(UserInputError):
    """The project file is invalid (unknown key, wrong type, bad value)."""


class DataValidationError(UserInputError):
    """Input data cannot be loaded at all (missing column, undecodable, empty)."""


class SourceNotFoundError(UserInputError):
    """A source file, glob or named source does not exist."""


class RuleSyntaxError(UserInputError):
    """A rule-language expression is malformed or uses something not allowed."""


class RuleEvaluationError(UserInputError):
    """A rule could not be evaluated on a record.

    Raised when a record holds a value of the wrong type for a field, or when
    evaluation fails the way the database would fail (integer overflow, the
    logarithm of zero, a LIKE pattern ending in its escape character).
    """


class NotFittedError(SegmintError):
    """A model or pipeline stage was used before it was run."""


class EngineError(SegmintError):
    """The database engine failed; carries the SQL that failed.

    Parameters
    ----------
    message
        What the engine reported.
    sql
        The statement that failed, with user values bound as parameters.
    """

    def __init__(self, message: str, *, sql: str | None = None) -> None:
        self.sql = sql
        super().__init__(message)
