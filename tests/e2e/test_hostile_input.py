"""Hostile command files are malformed (exit 2, one line naming the line and field, nothing
applied), never a store error: what validates must be storable in SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.cli_runner import entitlements

REGISTER = (
    b'{"command": "register_account", "account_id": "acc-1", "region": "DE", "plan": "free", '
    b'"channel": "online", "effective_at": "2020-01-01", "recorded_at": "2020-01-01"}'
)
# A valid line before each bad one: it would change acc-1's history if anything were applied.
REVOKE = b'{"command": "revoke_hosting", "account_id": "acc-1", "reason": "x", "effective_at": "2020-02-01"}'


def run(store_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The command in this process (cli_runner.py)."""
    return entitlements(*args, env={**os.environ, "ENTITLEMENTS_DB": store_url})


@pytest.mark.parametrize(
    ("bad_line", "field"),
    [
        pytest.param(
            b'{"command": "suspend_account", "account_id": "acc-1", "jurisdiction": "DE", '
            b'"jurisdiction": "platform", "reason": "x", "effective_at": "2020-03-01"}',
            "jurisdiction",
            id="duplicate-key",
        ),
        pytest.param(
            b'{"command": "restore_hosting", "account_id": "acc-1", "reason": "a\\u0000b", '
            b'"effective_at": "2020-03-01"}',
            "reason",
            id="nul-in-reason",
        ),
        pytest.param(
            b'{"command": "close_subscription", "account_id": "acc-1", '
            b'"effective_at": "0001-01-01T00:00:00+01:00"}',
            "effective_at",
            id="year-1-with-offset",
        ),
        pytest.param(b"\xff\xfe", None, id="not-utf8"),
        pytest.param(b"[" * 100_000, None, id="deeply-nested"),
    ],
)
def test_a_hostile_line_refuses_the_file_whole_in_one_line(
    store_url: str, tmp_path: Path, bad_line: bytes, field: str | None
) -> None:
    first = tmp_path / "first.jsonl"
    first.write_bytes(REGISTER + b"\n")
    assert run(store_url, "apply", str(first)).returncode == 0
    before = run(store_url, "history", "acc-1", "--json").stdout
    assert "AccountRegistered" in before

    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(REVOKE + b"\n" + bad_line + b"\n")
    result = run(store_url, "apply", str(bad))

    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "line 2" in result.stderr and "Traceback" not in result.stderr
    if field:
        assert f"field '{field}'" in result.stderr
    assert result.stdout == ""
    assert run(store_url, "history", "acc-1", "--json").stdout == before
