"""Dirty data: the documented defects injected into clean rows, and their rates."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime

import numpy as np

from segmint.errors import UserInputError

#: Injected future timestamps fall in this year.
FUTURE_YEAR = 2099
_FUTURE_START_S = int(datetime(FUTURE_YEAR, 1, 1, tzinfo=UTC).timestamp())
IMPOSSIBLE_AGES = np.array([150, 142, 199, 999, -3, -1])


@dataclass(frozen=True)
class DirtRates:
    """Rates (fractions of rows) of each kind of injected defect.

    Parameters
    ----------
    missing_email
        Customer rows with no e-mail (never one of a duplicate pair).
    missing_phone
        Customer rows with no phone number.
    missing_age
        Customer rows with no age.
    duplicate_customers
        Original customers who get a second CRM record under a new
        ``customer_id``: same person, e-mail in other case and/or with
        surrounding whitespace, phone maybe written differently. Listed in
        ``duplicates.csv``; later store orders go to the new record.
    exact_duplicate_rows
        Rows of ``customers`` and ``orders`` written twice, identically.
    impossible_age
        Customer rows with an age like 150 or -3.
    negative_amount
        Orders whose amount has the wrong sign.
    future_timestamp
        Orders (``ordered_at``) and events (``timestamp``) dated in 2099.
    malformed_lines
        Extra broken lines in text files (CSV: a line with the wrong number of
        fields; JSON Lines: a truncated object). Parquet output has none.

    Examples
    --------
    >>> DirtRates(missing_email=0.1).missing_email
    0.1
    >>> DirtRates(missing_age=1.5)
    Traceback (most recent call last):
    ...
    segmint.errors.UserInputError: dirt_rates.missing_age: must be a fraction in [0, 1], got 1.5
    """

    missing_email: float = 0.03
    missing_phone: float = 0.10
    missing_age: float = 0.05
    duplicate_customers: float = 0.02
    exact_duplicate_rows: float = 0.005
    impossible_age: float = 0.005
    negative_amount: float = 0.002
    future_timestamp: float = 0.001
    malformed_lines: float = 0.0005

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or math.isnan(value)
                or not 0.0 <= value <= 1.0
            ):
                raise UserInputError(
                    f"must be a fraction in [0, 1], got {value!r}", where=f"dirt_rates.{f.name}"
                )

    @classmethod
    def none(cls) -> DirtRates:
        """All rates zero: clean data."""
        return cls(**{f.name: 0.0 for f in fields(cls)})

    def as_dict(self) -> dict[str, float]:
        """The rates by name, as plain floats."""
        return {k: float(v) for k, v in asdict(self).items()}


KINDS: tuple[str, ...] = tuple(f.name for f in fields(DirtRates))


def pick_rows(
    rng: np.random.Generator, n: int, rate: float, eligible: np.ndarray | None = None
) -> np.ndarray:
    """Boolean mask of rows to spoil: each row with chance ``rate``.

    With ``eligible``, only those rows are spoiled, at a raised chance so that
    the expected count is still ``rate * n``.
    """
    if eligible is None:
        return rng.random(n) < rate
    share = eligible.mean() if n else 1.0
    chance = min(1.0, rate / share) if share > 0 else 0.0
    return (rng.random(n) < chance) & eligible


def future_seconds(rng: np.random.Generator, n: int) -> np.ndarray:
    """Times (seconds since the epoch) spread over the year :data:`FUTURE_YEAR`."""
    return _FUTURE_START_S + rng.integers(0, 365 * 86_400, n)


def impossible_ages(rng: np.random.Generator, n: int) -> np.ndarray:
    """Ages no customer can have (150, -3, ...)."""
    return IMPOSSIBLE_AGES[rng.integers(0, len(IMPOSSIBLE_AGES), n)]


def repeat_rows(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    """Row order with some rows written twice: indices into ``0 .. n - 1``.

    Each row is repeated with chance ``rate``; the copy goes to a random later
    position.
    """
    base = np.arange(n)
    repeated = np.flatnonzero(rng.random(n) < rate)
    if len(repeated) == 0:
        return base
    positions = repeated + 1 + (rng.random(len(repeated)) * (n - repeated)).astype(np.int64)
    order = np.argsort(positions, kind="stable")
    return np.insert(base, positions[order], repeated[order])
