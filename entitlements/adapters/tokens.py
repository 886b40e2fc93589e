"""API tokens for the HTTP door (`entitlements serve`): who is calling, and with which role.

Tokens live in the store's own database (table `api_tokens`), so every worker and host
that serves one store shares them. Only a SHA-256 hash of each secret is kept: a copy of
the database does not let anyone call the API. `TokenStore.authenticate` reads the table on
every call (one indexed lookup by hash): a revocation takes effect at once. An HTTP worker
authenticates from a `TokenCache` instead, the valid tokens held in memory and read again
every `REFRESH_EVERY` seconds: a check costs no database round trip, goes on being
authenticated while the store is away, and a revocation reaches every worker within a second.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, MetaData, String, Table, inspect, select, update
from sqlalchemy.engine import Engine as SqlEngine
from sqlalchemy.exc import DBAPIError, IntegrityError

from entitlements.domain.times import stored_utc

#: Roles, weakest first: each may do everything the ones before it may (admin > auditor > checker).
ROLES: tuple[str, ...] = ("checker", "auditor", "admin")
NAME_PATTERN = re.compile(r"[A-Za-z0-9._:@-]{1,64}")
SECRET_PREFIX = "ent_"  # tells a leaked string for what it is (secret scanners, logs)
MAX_SECRET_LENGTH = 256  # longer is never ours: not worth hashing
REFRESH_EVERY = 0.5  # seconds between two reads of the table by a TokenCache

metadata = MetaData()
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),  # the index authenticate uses
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)


class TokenError(ValueError):
    """A token request that cannot be honoured (bad name or role, a name in use), in one line."""


@dataclass(frozen=True)
class Principal:
    """Who an authenticated request comes from."""

    name: str
    role: str

    def may(self, role: str) -> bool:
        """Whether this principal holds `role` or a stronger one (roles nest)."""
        if role not in ROLES:
            raise TokenError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
        return ROLES.index(self.role) >= ROLES.index(role)


def hash_secret(secret: str) -> str:
    """SHA-256 hex of a secret: what the table keeps. Secrets are 256-bit random, so a
    fast unsalted hash is enough (no dictionary to guess from) and lets us look it up."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class TokenStore:
    """The API tokens of one store (SQLite or PostgreSQL), on the store's own database."""

    def __init__(self, engine: SqlEngine) -> None:
        """`engine`: SQLAlchemy on the store's database (the application opens it:
        `entitlements.application.access.open_tokens(url)`)."""
        self.engine = engine
        self._ready = False

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> TokenStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _table(self) -> Table:
        """The table, created on first use. Two processes creating it at once: the loser's
        error is ignored once the table is there."""
        if not self._ready:
            try:
                metadata.create_all(self.engine, checkfirst=True)
            except DBAPIError:
                if not inspect(self.engine).has_table(api_tokens.name):
                    raise
            self._ready = True
        return api_tokens

    def create(self, name: str, role: str) -> str:
        """A new token for `name` with `role`; returns its secret, which is never stored
        (only its hash): show it once. Names are never reused, even once revoked, so a
        name in logs and `actor` fields always means one token."""
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise TokenError(f"bad token name {name!r}: 1-64 of A-Za-z0-9._:@-")
        if role not in ROLES:
            raise TokenError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        table = self._table()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    table.insert().values(
                        name=name,
                        role=role,
                        token_hash=hash_secret(secret),
                        created_at=datetime.now(UTC),
                    )
                )
        except IntegrityError:
            raise TokenError(
                f"a token named {name!r} already exists (names are never reused, even revoked): choose another name"
            ) from None
        return secret

    def revoke(self, name: str) -> bool:
        """Revoke `name`'s token: it stops authenticating at once, in every process.
        False when no token has that name; revoking twice keeps the first time."""
        table = self._table()
        with self.engine.begin() as conn:
            conn.execute(
                update(table)
                .where(table.c.name == name, table.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
            return (
                conn.execute(select(table.c.name).where(table.c.name == name)).first() is not None
            )

    def authenticate(self, secret: str) -> Principal | None:
        """The principal a presented secret belongs to, or None (unknown, revoked, malformed).
        Reads the database every call: a revocation elsewhere counts at once."""
        if not isinstance(secret, str) or not secret or len(secret) > MAX_SECRET_LENGTH:
            return None
        presented = hash_secret(secret)
        table = self._table()
        with self.engine.connect() as conn:
            row = conn.execute(
                select(table.c.name, table.c.role, table.c.token_hash, table.c.revoked_at).where(
                    table.c.token_hash == presented
                )
            ).first()
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(row.token_hash.encode(), presented.encode()):
            return None
        if row.role not in ROLES:  # a row edited by hand: never guess a role
            return None
        return Principal(name=row.name, role=row.role)

    def valid(self) -> dict[str, Principal]:
        """Every token that authenticates now, by the hash of its secret: one read of the
        table, what a TokenCache holds (a role edited by hand into nonsense is left out)."""
        table = self._table()
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(table.c.name, table.c.role, table.c.token_hash).where(
                    table.c.revoked_at.is_(None)
                )
            ).all()
        return {r.token_hash: Principal(r.name, r.role) for r in rows if r.role in ROLES}

    def list(self) -> builtins.list[dict[str, Any]]:
        """Every token, oldest first: name, role, created_at, revoked_at (aware UTC datetimes,
        revoked_at None while valid). Never the secret nor its hash."""
        table = self._table()
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(table.c.name, table.c.role, table.c.created_at, table.c.revoked_at).order_by(
                    table.c.created_at, table.c.name
                )
            ).all()
        return [
            {
                "name": r.name,
                "role": r.role,
                "created_at": stored_utc(r.created_at),
                "revoked_at": stored_utc(r.revoked_at) if r.revoked_at else None,
            }
            for r in rows
        ]


class TokenCache:
    """The valid tokens of a store, held in memory by one process (an HTTP worker).

    `authenticate` never touches the store: a check pays one SHA-256 and one dict lookup,
    and goes on being authenticated while the store is away (with the tokens last read).
    `refresh` reads the table again: an HTTP worker does so every `REFRESH_EVERY` s, so a
    token revoked anywhere stops working in every worker within a second. (The lookup
    is by the hash of a 256-bit random secret: timing it tells an attacker nothing.)"""

    def __init__(self, store: TokenStore) -> None:
        self.store = store
        self._valid: dict[str, Principal] = {}
        self.refreshed_at: float | None = None  # time.time() of the last good read
        self.error: str | None = None  # why the last read failed, while it does

    def refresh(self) -> None:
        """Read the table again (raises the store's error; the tokens held stay)."""
        self._valid = self.store.valid()
        self.refreshed_at, self.error = time.time(), None

    def authenticate(self, secret: str) -> Principal | None:
        """The principal of a presented secret, or None (unknown, revoked, malformed)."""
        if not isinstance(secret, str) or not secret or len(secret) > MAX_SECRET_LENGTH:
            return None
        return self._valid.get(hash_secret(secret))

    def close(self) -> None:
        self.store.close()
