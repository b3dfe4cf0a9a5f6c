"""The generator's time frame: the end of the data and the start of the history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

DAY_S = 86_400


@dataclass(frozen=True)
class Clock:
    """Seconds since the epoch (UTC) bounding the generated history.

    ``end_s`` is midnight at the start of ``end``: every generated time is
    strictly before it (except injected future timestamps).
    """

    end_s: int
    start_s: int

    @classmethod
    def of(cls, end: date, years: float) -> Clock:
        """The clock of a history of ``years`` ending at midnight starting ``end``."""
        end_s = int(datetime(end.year, end.month, end.day, tzinfo=UTC).timestamp())
        return cls(end_s=end_s, start_s=end_s - int(round(years * 365.25 * DAY_S)))

    @property
    def end_day(self) -> int:
        """Days since the epoch of ``end``."""
        return self.end_s // DAY_S

    @property
    def history_days(self) -> float:
        """Length of the history in days."""
        return (self.end_s - self.start_s) / DAY_S
