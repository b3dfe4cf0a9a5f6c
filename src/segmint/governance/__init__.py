"""Governance: API keys and roles, throttling of failed authentications.

Examples
--------
>>> from segmint.engine import Warehouse
>>> wh = Warehouse(":memory:")
>>> info, key = create_key(wh, Role.analyst, name="notebook")
>>> KeyCache.load(wh).authenticate(key).role
<Role.analyst: 'analyst'>
"""

from __future__ import annotations

from segmint.governance.keys import (
    API_KEYS,
    ApiKeyInfo,
    KeyCache,
    Role,
    allowed,
    authenticate,
    create_key,
    ensure_keys_table,
    hash_key,
    list_keys,
    parse_authorization,
    parse_role,
    revoke_key,
)
from segmint.governance.throttle import AuthThrottle, client_key

__all__ = [
    "API_KEYS",
    "ApiKeyInfo",
    "AuthThrottle",
    "KeyCache",
    "Role",
    "allowed",
    "authenticate",
    "client_key",
    "create_key",
    "ensure_keys_table",
    "hash_key",
    "list_keys",
    "parse_authorization",
    "parse_role",
    "revoke_key",
]
