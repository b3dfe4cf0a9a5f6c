"""Consent histories: a choice per purpose at signup, some changed later."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segmint.data.synthetic import _segments
from segmint.data.synthetic._clock import Clock
from segmint.data.synthetic._people import People

PURPOSES: tuple[str, ...] = ("analytics", "personalization", "email_marketing", "advertising")
SOURCES: tuple[str, ...] = ("web_form", "app", "crm")
EMAIL = PURPOSES.index("email_marketing")

#: Chance of granting each purpose at signup (e-mail marketing depends on the segment).
GRANT_AT_SIGNUP = {"analytics": 0.85, "personalization": 0.60, "advertising": 0.35}
WITHDRAW = 0.12  # chance that a grant is withdrawn later
GRANT_LATER = 0.10  # chance that a refusal turns into a grant later
NEVER = np.iinfo(np.int64).max


@dataclass
class Consents:
    """Per customer and purpose: the choice at signup and when (if ever) it flipped."""

    initial: np.ndarray  # (n, purposes) bool
    signup_source: np.ndarray  # (n,) source index
    changed_s: np.ndarray  # (n, purposes) time of the flip, NEVER if none
    change_source: np.ndarray  # (n, purposes)

    def state_at(self, customer: np.ndarray, at_s: np.ndarray) -> np.ndarray:
        """``(len(customer), purposes)`` bool: the choice in force at each time."""
        flipped = at_s[:, None] >= self.changed_s[customer]
        return self.initial[customer] ^ flipped

    def rows(
        self, people: People
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Consent table rows: customer index, purpose, granted, at (s), source."""
        n, k = self.initial.shape
        customer = np.repeat(np.arange(n), k)
        purpose = np.tile(np.arange(k), n)
        granted = self.initial.reshape(-1)
        at_s = np.repeat(people.signup_s, k)
        source = np.repeat(self.signup_source, k)
        changed = self.changed_s.reshape(-1) != NEVER
        customer = np.concatenate([customer, customer[changed]])
        purpose = np.concatenate([purpose, purpose[changed]])
        granted = np.concatenate([granted, ~granted[changed]])
        at_s = np.concatenate([at_s, self.changed_s.reshape(-1)[changed]])
        source = np.concatenate([source, self.change_source.reshape(-1)[changed]])
        order = np.lexsort((purpose, at_s, customer))
        return customer[order], purpose[order], granted[order], at_s[order], source[order]


def draw_consents(rng: np.random.Generator, people: People, clock: Clock) -> Consents:
    """Draw each customer's consent choices and later changes."""
    n = len(people)
    grant = np.empty((n, len(PURPOSES)))
    for j, purpose in enumerate(PURPOSES):
        if purpose == "email_marketing":
            grant[:, j] = _segments.column("email_consent")[people.segment]
        else:
            grant[:, j] = GRANT_AT_SIGNUP[purpose]
    initial = rng.random((n, len(PURPOSES))) < grant
    flip_chance = np.where(initial, WITHDRAW, GRANT_LATER)
    flips = rng.random((n, len(PURPOSES))) < flip_chance
    span = (clock.end_s - 60 - people.signup_s)[:, None]
    when = people.signup_s[:, None] + 3600 + (rng.random((n, len(PURPOSES))) * (span - 3600))
    changed_s = np.where(flips & (span > 7200), when.astype(np.int64), NEVER)
    signup_source = rng.choice(len(SOURCES), size=n, p=[0.6, 0.3, 0.1])
    change_source = rng.choice(len(SOURCES), size=(n, len(PURPOSES)), p=[0.5, 0.3, 0.2])
    return Consents(initial, signup_source, changed_s, change_source)
