"""API keys: creation, hashing, authentication, revocation, the in-memory cache, headers."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from segmint.engine import Warehouse
from segmint.errors import UserInputError
from segmint.governance import (
    ApiKeyInfo,
    KeyCache,
    Role,
    allowed,
    authenticate,
    create_key,
    ensure_keys_table,
    list_keys,
    parse_authorization,
    parse_role,
    revoke_key,
)

KEY_SHAPE = re.compile(r"sgm_([0-9a-f]{8})_[A-Za-z0-9_-]{43}")


@pytest.fixture
def wh() -> Warehouse:
    with Warehouse(":memory:") as warehouse:
        yield warehouse


def basic(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def table_text(wh: Warehouse, table: str) -> str:
    """Every value of every column of a table, as text."""
    columns = wh.columns(table)
    casts = ", ".join(f'CAST("{c}" AS VARCHAR)' for c in columns)
    return "\n".join(
        " ".join(str(v) for v in row) for row in wh.fetchall(f"SELECT {casts} FROM {table}")
    )


# ---------------------------------------------------------------------- creation and storage
def test_created_key_has_the_documented_shape_and_id(wh):
    info, key = create_key(wh, Role.ingest, name="web site")
    match = KEY_SHAPE.fullmatch(key)
    assert match is not None, key
    assert info.key_id == "sk_" + match.group(1)
    assert (info.role, info.name, info.active, info.last_used_at) == (
        Role.ingest,
        "web site",
        True,
        None,
    )


def test_only_the_hash_is_stored(wh):
    info, key = create_key(wh, "analyst")
    secret = key[len("sgm_12345678_") :]
    stored = table_text(wh, "api_keys") + table_text(wh, "audit_log")
    assert key not in stored
    assert secret not in stored
    assert info.key_id in stored
    digest = wh.scalar("SELECT key_hash FROM api_keys WHERE key_id = ?", [info.key_id])
    assert digest == hashlib.sha256(key.encode()).hexdigest()


def test_the_key_is_not_in_the_database_file_nor_the_logs(tmp_path: Path, caplog):
    path = tmp_path / "segmint.duckdb"
    caplog.set_level(logging.DEBUG)
    with Warehouse(path) as wh:
        with wh.transaction():
            info, key = create_key(wh, Role.admin)
        wh.checkpoint()
    secret = key[len("sgm_12345678_") :]
    data = path.read_bytes()
    assert info.key_id.encode() in data  # the table did reach the file
    assert secret.encode() not in data
    assert secret not in caplog.text
    assert info.key_id in caplog.text


def test_keys_are_distinct(wh):
    made = [create_key(wh, Role.ingest) for _ in range(20)]
    assert len({info.key_id for info, _ in made}) == 20
    assert len({key for _, key in made}) == 20


def test_table_declares_its_primary_key(wh):
    ensure_keys_table(wh)
    ensure_keys_table(wh)  # idempotent
    wh.execute("INSERT INTO api_keys VALUES ('sk_00000000', NULL, 'admin', 'x', now(), NULL, NULL)")
    with pytest.raises(Exception, match="(?i)constraint|duplicate"):
        wh.execute(
            "INSERT INTO api_keys VALUES ('sk_00000000', NULL, 'admin', 'y', now(), NULL, NULL)"
        )


def test_create_opens_no_transaction_of_its_own(wh):
    ensure_keys_table(wh)
    with pytest.raises(RuntimeError):
        with wh.transaction():
            create_key(wh, Role.analyst)
            raise RuntimeError("caller fails later in its transaction")
    assert list_keys(wh) == []


def test_creation_and_revocation_are_audited(wh):
    info, _ = create_key(wh, Role.marketer, actor="ops")
    revoke_key(wh, info.key_id, actor="ops")
    revoke_key(wh, info.key_id, actor="ops")  # no second entry
    rows = wh.fetchall(
        'SELECT actor, action, CAST(details AS VARCHAR) FROM audit_log ORDER BY "at", rowid'
    )
    assert [(a, action) for a, action, _ in rows] == [
        ("ops", "api_key_created"),
        ("ops", "api_key_revoked"),
    ]
    assert all(info.key_id in details and "marketer" in details for *_, details in rows)


@pytest.mark.parametrize("role", ["Admin", " analyst ", "MARKETER", "ingest", Role.auditor])
def test_roles_parse_case_insensitively(role):
    assert parse_role(role) in set(Role)


def test_unknown_role_is_a_user_error_listing_the_roles(wh):
    with pytest.raises(UserInputError) as caught:
        create_key(wh, "superuser")
    message = str(caught.value)
    assert "superuser" in message
    assert all(role.value in message for role in Role)
    assert list_keys(wh) == []


@pytest.mark.parametrize("name", ["x" * 201, "tab\there", "new\nline"])
def test_bad_names_are_refused(wh, name):
    with pytest.raises(UserInputError):
        create_key(wh, Role.ingest, name=name)


def test_blank_name_is_no_name(wh):
    info, _ = create_key(wh, Role.ingest, name="   ")
    assert info.name is None


# ---------------------------------------------------------------------- listing
def test_list_shows_every_key_without_secrets(wh):
    assert list_keys(wh) == []  # no table yet: no keys, nothing created
    assert not wh.has_table("api_keys")
    first, first_key = create_key(wh, Role.admin, name="ops")
    second, second_key = create_key(wh, Role.ingest)
    revoke_key(wh, second.key_id)
    listed = list_keys(wh)
    assert [k.key_id for k in listed] == [first.key_id, second.key_id]
    assert [k.active for k in listed] == [True, False]
    for info in listed:
        assert isinstance(info, ApiKeyInfo)
        text = repr(info) + repr(info.to_dict())
        assert first_key not in text and second_key not in text
        assert "hash" not in text
    assert listed[0].to_dict()["role"] == "admin"
    assert listed[1].to_dict()["revoked_at"].endswith("Z")


# ---------------------------------------------------------------------- authentication
def test_authenticate_accepts_an_active_key(wh):
    info, key = create_key(wh, Role.analyst, name="nb")
    assert authenticate(wh, key) == info


def test_authenticate_refuses_a_revoked_key(wh):
    info, key = create_key(wh, Role.analyst)
    other, other_key = create_key(wh, Role.analyst)
    revoked = revoke_key(wh, info.key_id)
    assert revoked.revoked_at is not None and not revoked.active
    assert authenticate(wh, key) is None
    assert authenticate(wh, other_key) == other


def test_revoking_twice_changes_nothing(wh):
    info, _ = create_key(wh, Role.analyst)
    once = revoke_key(wh, info.key_id)
    twice = revoke_key(wh, f"  {info.key_id} ")
    assert once == twice
    assert list_keys(wh) == [once]


@pytest.mark.parametrize("with_table", [True, False])
def test_revoking_an_unknown_id_names_it(wh, with_table):
    if with_table:
        create_key(wh, Role.analyst)
    with pytest.raises(UserInputError, match="sk_deadbeef"):
        revoke_key(wh, "sk_deadbeef")


def test_authenticate_refuses_unknown_keys(wh):
    info, key = create_key(wh, Role.ingest)
    id_part = info.key_id.removeprefix("sk_")
    other_secret = "A" * 43 if not key.endswith("A" * 43) else "B" * 43
    assert authenticate(wh, f"sgm_{id_part}_{other_secret}") is None  # known id, wrong secret
    unknown_id = "0" * 8 if id_part != "0" * 8 else "1" * 8
    assert authenticate(wh, f"sgm_{unknown_id}_{key[-43:]}") is None  # right secret, other id


@pytest.mark.parametrize(
    "mangle",
    [
        lambda k: "",
        lambda k: None,
        lambda k: k[:-1],
        lambda k: k + "x",
        lambda k: " " + k,
        lambda k: k + "\n",
        lambda k: k.upper(),
        lambda k: k.replace("sgm_", "sgx_", 1),
        lambda k: k.replace("sgm_", "", 1),
        lambda k: k[:-1] + "é",
        lambda k: k * 20,
        lambda k: 12345,
    ],
)
def test_authenticate_refuses_malformed_keys(wh, mangle):
    _, key = create_key(wh, Role.admin)
    presented = mangle(key)
    assert authenticate(wh, presented) is None
    assert KeyCache.load(wh).authenticate(presented) is None


def test_authenticate_without_a_keys_table(wh):
    assert authenticate(wh, "sgm_3f9a2c1d_" + "A" * 43) is None
    assert len(KeyCache.load(wh)) == 0


# ---------------------------------------------------------------------- roles
@pytest.mark.parametrize("required", [set(), {Role.ingest}, {Role.auditor, Role.marketer}])
def test_admin_is_allowed_everywhere(required):
    assert allowed(Role.admin, required)


@given(st.sampled_from(list(Role)), st.sets(st.sampled_from(list(Role))))
def test_allowed_means_admin_or_listed(role, required):
    assert allowed(role, required) == (role is Role.admin or role in required)
    assert allowed(role, frozenset(required) | {role})


def test_ingest_may_not_read():
    reads = {Role.analyst, Role.marketer, Role.auditor}
    assert not allowed(Role.ingest, reads)
    assert not allowed(Role.marketer, {Role.ingest})


# ---------------------------------------------------------------------- the cache
def test_cache_agrees_with_the_warehouse(wh):
    made = [create_key(wh, role) for role in Role]
    revoke_key(wh, made[1][0].key_id)
    cache = KeyCache.load(wh)
    presented = [key for _, key in made] + ["sgm_00000000_" + "A" * 43, "garbage", None]
    for key in presented:
        assert cache.authenticate(key) == authenticate(wh, key)
    assert len(cache) == len(Role) - 1
    assert made[1][0].key_id not in cache


def test_cache_applies_revokes_and_new_keys_on_refresh(wh):
    info, key = create_key(wh, Role.marketer)
    cache = KeyCache.load(wh)
    assert cache.authenticate(key) == info
    revoke_key(wh, info.key_id)
    new, new_key = create_key(wh, Role.analyst)
    cache.refresh(wh)
    assert cache.authenticate(key) is None
    assert cache.authenticate(new_key) == new


def test_cache_skips_keys_with_an_unknown_role(wh, caplog):
    info, key = create_key(wh, Role.analyst)
    wh.execute("UPDATE api_keys SET role = 'root' WHERE key_id = ?", [info.key_id])
    assert KeyCache.load(wh).authenticate(key) is None
    assert authenticate(wh, key) is None
    assert "root" in caplog.text


def test_cache_records_last_use(wh):
    info, key = create_key(wh, Role.analyst)
    idle, _ = create_key(wh, Role.analyst)
    cache = KeyCache.load(wh)
    assert cache.flush_usage(wh) == 0
    cache.authenticate(key)
    cache.authenticate(key)
    assert cache.flush_usage(wh) == 1
    used = {k.key_id: k.last_used_at for k in list_keys(wh)}
    assert used[idle.key_id] is None
    assert used[info.key_id] is not None and used[info.key_id] >= info.created_at
    assert cache.flush_usage(wh) == 0


# ---------------------------------------------------------------------- Authorization header
KEY = "sgm_3f9a2c1d_" + "Ab-_" * 10 + "xyz"


@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {KEY}",
        f"bearer {KEY}",
        f"  Bearer   {KEY}  ",
        basic(KEY),
        basic(KEY, "anything:with:colons"),
        "BASIC " + base64.b64encode(f"{KEY}:".encode()).decode(),
    ],
)
def test_authorization_forms(header):
    assert parse_authorization(header) == KEY


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Bearer {KEY} extra",
        f"Token {KEY}",
        KEY,
        "Basic not-base64!",
        "Basic " + base64.b64encode(KEY.encode()).decode(),  # no colon
        basic(""),  # empty user
        "Basic " + base64.b64encode(b"\xff\xfe:").decode(),  # not UTF-8
        basic("a b"),
        "Bearer " + "x" * 1000,
    ],
)
def test_malformed_authorization_gives_none(header):
    assert parse_authorization(header) is None


@given(
    st.text(
        alphabet=st.characters(codec="ascii", categories=("L", "N", "P", "S")),
        min_size=1,
        max_size=80,
    ).filter(lambda s: ":" not in s),
    st.text(max_size=30),
)
def test_basic_and_bearer_round_trip(user, password):
    assert parse_authorization(basic(user, password)) == user
    assert parse_authorization(f"Bearer {user}") == user


def test_a_key_read_from_either_header_authenticates(wh):
    info, key = create_key(wh, Role.ingest)
    cache = KeyCache.load(wh)
    for header in (basic(key), f"Bearer {key}"):
        assert cache.authenticate(parse_authorization(header)) == info
