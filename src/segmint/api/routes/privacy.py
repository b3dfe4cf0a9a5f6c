"""What a key's role may see of a person's identifiers."""

from __future__ import annotations

from fastapi import HTTPException

from segmint.data.privacy.pseudonymise import load_key, pseudonymise
from segmint.errors import UserInputError
from segmint.governance.keys import ApiKeyInfo, Role


def shown_person(person_id: str, key: ApiKeyInfo) -> str:
    """The person id as the caller may see it: pseudonymised (HMAC) for marketers."""
    if key.role is not Role.marketer:
        return person_id
    try:
        secret = load_key()
    except UserInputError as e:
        raise HTTPException(403, str(e)) from e
    if secret is None:
        raise HTTPException(
            403,
            "marketers see pseudonymised ids, and the server has no pseudonymisation key "
            "(set SEGMINT_PSEUDONYMIZATION_KEY)",
        )
    return pseudonymise(person_id, secret)
