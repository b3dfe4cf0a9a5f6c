"""The suppression list in memory, for checking every real-time event.

The batch loader checks the list in SQL; the real-time path cannot afford a
query per event, so :class:`SuppressionFilter` loads the hashes once and hashes
each event's identifiers (user id, anonymous id, the e-mail in identify traits)
with the same schemes (:mod:`segmint.data.privacy.suppression`). An erasure
made while the server runs goes through the server (which reloads the filter);
the CLI cannot write while the server holds the database.
"""

from __future__ import annotations

from segmint.data.privacy.pseudonymise import normalise_identifier
from segmint.data.privacy.suppression import HashScheme, reading_schemes
from segmint.engine import Warehouse
from segmint.realtime.events import Event

__all__ = ["SuppressionFilter"]


class SuppressionFilter:
    """Which events belong to erased persons.

    Examples
    --------
    >>> from datetime import datetime
    >>> from segmint.data.privacy.suppression import add_to_suppression
    >>> from segmint.realtime.events import Event, EventType
    >>> wh = Warehouse(":memory:")
    >>> _ = add_to_suppression(wh, [("customer_id", "c1")])
    >>> f = SuppressionFilter.load(wh)
    >>> t = datetime(2026, 1, 1)
    >>> f.blocks(Event("m1", EventType.track, t, t, event="x", user_id=" c1 "))
    True
    >>> f.blocks(Event("m2", EventType.track, t, t, event="x", user_id="c2"))
    False
    """

    def __init__(self, schemes: list[HashScheme], hashes: set[tuple[str, str]]) -> None:
        self._schemes = schemes
        self._hashes = hashes

    @classmethod
    def load(cls, wh: Warehouse) -> SuppressionFilter:
        schemes = reading_schemes(wh)
        if not schemes:
            return cls([], set())
        rows = wh.fetchall("SELECT scheme, hash FROM suppression_list")
        return cls(schemes, {(scheme, digest) for scheme, digest in rows})

    def __len__(self) -> int:
        return len(self._hashes)

    def blocks(self, event: Event) -> bool:
        if not self._hashes:
            return False
        email = event.traits.get("email") if event.type.value == "identify" else None
        for value in (event.user_id, event.anonymous_id, email):
            normalised = normalise_identifier(value) if isinstance(value, str) else None
            if normalised is None:
                continue
            for scheme in self._schemes:
                if (scheme.name, scheme.digest(normalised)) in self._hashes:
                    return True
        return False
