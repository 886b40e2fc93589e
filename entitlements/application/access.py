"""Who may call the HTTP door: the store's API tokens, opened on the store's own database.

The adapter (`entitlements.adapters.tokens`) keeps the table; this is where it meets the
store's URL and the SQL engine every read model uses, so the doors never build either.
"""

from __future__ import annotations

from entitlements.adapters.store import store_url
from entitlements.adapters.tokens import TokenStore
from projections.sql_views import sql_engine


def open_tokens(url: str) -> TokenStore:
    """The API tokens of the store at `url` (as users type it: a path or a store URL)."""
    return TokenStore(sql_engine(store_url(url)))
