"""API tokens (entitlements.adapters.tokens) on the store's own database, SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from entitlements.adapters.tokens import (
    ROLES,
    Principal,
    TokenCache,
    TokenError,
    TokenStore,
    api_tokens,
)
from entitlements.application.access import open_tokens


@pytest.fixture
def tokens(store_url: str) -> Iterator[TokenStore]:
    with open_tokens(store_url) as t:
        yield t


def test_a_created_token_authenticates_as_its_name_and_role(tokens: TokenStore) -> None:
    secret = tokens.create("meetings-svc", "checker")
    assert secret.startswith("ent_") and len(secret) > 40
    assert tokens.authenticate(secret) == Principal("meetings-svc", "checker")
    assert tokens.create("ops@example", "admin") != secret


def test_unknown_empty_or_tampered_secrets_are_refused(tokens: TokenStore) -> None:
    secret = tokens.create("svc", "auditor")
    for wrong in ("", "ent_", secret[:-1], secret + "x", secret.upper(), "x" * 10_000):
        assert tokens.authenticate(wrong) is None


def test_only_the_hash_is_stored(tokens: TokenStore) -> None:
    secret = tokens.create("svc", "checker")
    with tokens.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(api_tokens))]
    assert len(rows) == 1
    assert rows[0]["token_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert all(secret not in str(value) for value in rows[0].values())


def test_list_shows_names_roles_and_times_never_secrets(tokens: TokenStore) -> None:
    a = tokens.create("a", "checker")
    b = tokens.create("b", "admin")
    tokens.revoke("a")
    listed = tokens.list()
    assert [(t["name"], t["role"]) for t in listed] == [("a", "checker"), ("b", "admin")]
    assert set(listed[0]) == {"name", "role", "created_at", "revoked_at"}
    assert listed[0]["revoked_at"] is not None and listed[1]["revoked_at"] is None
    assert listed[0]["created_at"].tzinfo is not None
    assert a not in str(listed) and b not in str(listed)
    assert hashlib.sha256(a.encode()).hexdigest() not in str(listed)


def test_revoke_is_immediate_idempotent_and_false_for_an_unknown_name(tokens: TokenStore) -> None:
    secret = tokens.create("svc", "admin")
    assert tokens.revoke("svc") is True
    assert tokens.authenticate(secret) is None
    first = tokens.list()[0]["revoked_at"]
    assert tokens.revoke("svc") is True
    assert tokens.list()[0]["revoked_at"] == first  # the first revocation's time stays
    assert tokens.revoke("nobody") is False


def test_another_worker_sees_a_revocation_at_once(store_url: str, tokens: TokenStore) -> None:
    secret = tokens.create("svc", "checker")
    with open_tokens(store_url) as worker:
        assert worker.authenticate(secret) == Principal("svc", "checker")
        tokens.revoke("svc")
        assert worker.authenticate(secret) is None


def test_roles_nest() -> None:
    checker, auditor, admin = (Principal("p", role) for role in ROLES)
    assert ROLES == ("checker", "auditor", "admin")
    assert [checker.may(r) for r in ROLES] == [True, False, False]
    assert [auditor.may(r) for r in ROLES] == [True, True, False]
    assert [admin.may(r) for r in ROLES] == [True, True, True]
    with pytest.raises(TokenError):
        admin.may("root")


def test_a_name_in_use_is_refused_even_revoked(tokens: TokenStore) -> None:
    first = tokens.create("svc", "checker")
    with pytest.raises(TokenError, match="already exists"):
        tokens.create("svc", "admin")
    tokens.revoke("svc")
    with pytest.raises(TokenError, match="already exists"):
        tokens.create("svc", "checker")
    assert tokens.authenticate(first) is None  # the refused attempts changed nothing
    assert [t["role"] for t in tokens.list()] == ["checker"]


@pytest.mark.parametrize("role", ["root", "Admin", "", "checker "])
def test_a_bad_role_is_refused(tokens: TokenStore, role: str) -> None:
    with pytest.raises(TokenError, match="role"):
        tokens.create("svc", role)
    assert tokens.list() == []


@pytest.mark.parametrize("name", ["", "x" * 65, "has space", "a/b", "ünï", "a\nb"])
def test_a_bad_name_is_refused(tokens: TokenStore, name: str) -> None:
    with pytest.raises(TokenError, match="name"):
        tokens.create(name, "checker")


def test_a_token_of_another_store_is_unknown(tokens: TokenStore, tmp_path: Path) -> None:
    secret = tokens.create("svc", "admin")
    with open_tokens(f"sqlite:///{tmp_path / 'other.db'}") as other:
        other.create("svc", "checker")  # same name, another store: another token
        assert other.authenticate(secret) is None
    assert tokens.authenticate(secret) == Principal("svc", "admin")


def test_a_token_cache_answers_as_the_store_did_when_last_read(tokens: TokenStore) -> None:
    """What an HTTP worker holds: the valid tokens as of its last read, no store read per
    request; a revocation counts from the next read, a failed read keeps what it holds."""
    kept, gone = tokens.create("kept", "admin"), tokens.create("gone", "checker")
    cache = TokenCache(tokens)
    assert cache.authenticate(kept) is None and cache.refreshed_at is None  # nothing read yet
    cache.refresh()
    assert cache.authenticate(kept) == Principal("kept", "admin")
    assert cache.authenticate(gone) == Principal("gone", "checker")
    tokens.revoke("gone")
    assert cache.authenticate(gone) == Principal("gone", "checker")  # until the next read
    cache.refresh()
    assert cache.authenticate(gone) is None and cache.authenticate(kept) is not None
    for wrong in ("", kept[:-1], kept + "x", "x" * 10_000):
        assert cache.authenticate(wrong) is None
    with tokens.engine.begin() as conn:  # a role edited by hand into nonsense
        conn.execute(api_tokens.update().values(role="root"))
    cache.refresh()
    assert cache.authenticate(kept) is None
