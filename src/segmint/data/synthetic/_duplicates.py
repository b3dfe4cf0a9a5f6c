"""Second CRM records of the same person under a new customer id."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segmint.data.synthetic import _phones, _text
from segmint.data.synthetic._clock import DAY_S, Clock
from segmint.data.synthetic._people import People


@dataclass
class Duplicates:
    """Duplicate records of one chunk."""

    original: np.ndarray  # index into the chunk's People
    number: np.ndarray  # global customer number of the new record, 0-based
    customer_id: pa.StringArray
    email: pa.StringArray
    phone: pa.StringArray
    created_s: np.ndarray
    updated_s: np.ndarray

    def __len__(self) -> int:
        return len(self.original)


def _email_variants(rng: np.random.Generator, email: pa.Array, crm: pa.Array) -> pa.Array:
    """The same address in another case and/or with whitespace around it.

    ``email`` is the clean address, ``crm`` how the original record spells it;
    the variant always differs from the latter.
    """
    n = len(email)
    style = rng.integers(0, 5, n)
    upper = pc.utf8_upper(email)
    capital = pc.utf8_capitalize(email)
    cased = _text.where(style == 0, upper, _text.where(style == 1, capital, email))
    lead = pa.array(np.array(["", " ", "  ", "\t"])[rng.integers(0, 4, n)])
    trail = pa.array(np.array([" ", "", "  "])[rng.integers(0, 3, n)])
    spaced = _text.join(lead, cased, trail)
    # Styles 0 and 1 change the case only; 2 adds whitespace only; 3 and 4 do both.
    plain_space = _text.join(lead, email, trail)
    out = _text.where(style <= 1, cased, _text.where(style == 2, plain_space, spaced))
    unchanged = pc.equal(out, crm)
    return pc.if_else(unchanged, _text.join(" ", out), out)


def draw_duplicates(
    rng: np.random.Generator,
    people: People,
    rate: float,
    first_number: int,
    clock: Clock,
    *,
    id_width: int,
) -> Duplicates:
    """Pick originals with chance ``rate`` and write a second record for each."""
    original = np.flatnonzero(rng.random(len(people)) < rate)
    m = len(original)
    number = np.arange(first_number, first_number + m, dtype=np.int64)
    signup = people.signup_s[original]
    room = clock.end_s - 2 * 3600 - signup
    created = signup + np.minimum(DAY_S, room // 2) + (rng.random(m) * np.maximum(room - DAY_S, 0))
    created = created.astype(np.int64)
    updated = created + (rng.random(m) * (clock.end_s - 60 - created)).astype(np.int64)
    shift = rng.integers(1, len(_phones.FORMATS), m)
    form = np.where(
        rng.random(m) < 0.5,
        (people.phone_form[original] + shift) % len(_phones.FORMATS),
        people.phone_form[original],
    )
    phone = _phones.render(people.phone_range[original], form, people.phone_free[original])
    return Duplicates(
        original=original,
        number=number,
        customer_id=_text.padded_ids("C", number + 1, id_width),
        email=_email_variants(
            rng, _text.pick(people.email, original), _text.pick(people.email_crm, original)
        ),
        phone=phone,
        created_s=created,
        updated_s=updated,
    )
