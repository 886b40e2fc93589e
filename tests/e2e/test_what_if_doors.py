"""`entitlements what-if` and `POST /v1/what-if` on SQLite and PostgreSQL: the china-2020
question answered, nothing recorded (the store's position and files unchanged), a malformed
file refused whole as `apply` refuses it, a bad time named, the auditor role required; and
`--png`: the counts it draws are `report`'s, before on the store and after on a copy where
the commands were really applied."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from entitlements import open_engine
from entitlements.application import command_book_file
from entitlements.application.access import open_tokens
from entitlements.application.report import as_json
from entitlements.application.what_if_counts import WhatIfCounts
from entitlements.cli import pictures, what_if_picture
from entitlements.http.app import create_app
from tests.conftest import read_jsonl, scenario_file
from tests.e2e.cli_runner import entitlements

EARLIER = {
    "command": "apply_region_rule",
    "region": "CN",
    "rule": "free_hosting_suspended",
    "effective_at": "2020-05-01",
    "recorded_at": "2020-05-01",
}
LOST = {
    ("cn-free-01", cap, "2020-05-01T00:00:00Z", "2020-05-19T00:00:00Z")
    for cap in ("host", "max_participants", "max_meeting_minutes")
}


@pytest.fixture
def china(store_url: str) -> str:
    with open_engine(store_url) as engine:
        engine.apply(read_jsonl(scenario_file("china-2020.jsonl")))
    return store_url


def _files(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix != ".jsonl"
    }


def _position(url: str) -> int:
    with open_engine(url) as engine:
        return engine.position()


def test_cli_answers_the_china_question_and_records_nothing(
    china: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also with every snapshot and command book due to be written (SNAPSHOT_EVERY 1): the
    what-if gives its engine none to write."""
    monkeypatch.setattr(command_book_file, "SNAPSHOT_EVERY", 1)
    file = tmp_path / "earlier.jsonl"
    file.write_text(json.dumps(EARLIER) + "\n")
    position, files = _position(china), _files(tmp_path)
    r = entitlements("what-if", str(file), "--json", "--db", china)
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout)
    assert {
        (c["account_id"], c["capability"], c["from"], c["to"]) for c in answer["changes"]
    } == LOST
    assert answer["position"] == position
    assert _files(tmp_path) == files and _position(china) == position
    later = tmp_path / "later.jsonl"  # recorded now: the copy takes the store's index whole
    us = {**EARLIER, "region": "US", "effective_at": "2021-01-01", "recorded_at": None}
    later.write_text(json.dumps(us))
    r = entitlements("what-if", str(later), "--json", "--db", china)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["results"][0]["status"] == "applied"
    assert _files(tmp_path) == files and _position(china) == position
    people = entitlements("what-if", str(file), "--db", china)
    assert people.returncode == 0, people.stderr
    assert "cn-free-01" in people.stdout and "2020-05-19T00:00:00Z" in people.stdout
    assert "nothing recorded" in people.stdout


def test_cli_refuses_a_malformed_file_whole(china: str, tmp_path: Path) -> None:
    file = tmp_path / "bad.jsonl"
    file.write_text(json.dumps(EARLIER) + "\n" + json.dumps({**EARLIER, "rule": "nope"}) + "\n")
    position = _position(china)
    r = entitlements("what-if", str(file), "--db", china)
    assert r.returncode == 2
    assert r.stderr.startswith("malformed: line 2, field 'rule'"), r.stderr
    assert r.stdout == "" and _position(china) == position
    bad = entitlements("what-if", str(file), "--from", "soon", "--db", china)
    assert bad.returncode == 2 and "from:" in bad.stderr


def test_cli_needs_an_existing_store(tmp_path: Path) -> None:
    file = tmp_path / "earlier.jsonl"
    file.write_text(json.dumps(EARLIER) + "\n")
    r = entitlements("what-if", str(file), "--db", str(tmp_path / "typo.db"))
    assert r.returncode != 0 and "does not exist" in r.stderr
    assert not (tmp_path / "typo.db").exists()


#: Recorded now, so `apply` takes them on a copy of the store too: a pro account registered
#: in CN from 1 April, and cn-ent-01's hosting revoked from 1 July.
NOW = [
    {
        "command": "register_account",
        "account_id": "cn-pro-09",
        "region": "CN",
        "plan": "pro",
        "channel": "direct",
        "effective_at": "2020-04-01",
    },
    {
        "command": "revoke_hosting",
        "account_id": "cn-ent-01",
        "reason": "audit",
        "effective_at": "2020-07-01",
    },
]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[WhatIfCounts]:
    """The counts each `what-if --png` passes to the plotting function (which still draws)."""
    seen: list[WhatIfCounts] = []
    draw = what_if_picture.what_if_figure

    def spy(counts: WhatIfCounts) -> Any:
        seen.append(counts)
        return draw(counts)

    monkeypatch.setattr(what_if_picture, "what_if_figure", spy)
    return seen


def _report(db: str, counts: WhatIfCounts, *known: str) -> dict[str, Any]:
    """`entitlements report --json` over the days and capabilities drawn."""
    capabilities = [x for s in counts.after.series for x in ("--capability", s.capability)]
    days = ("--from", str(counts.after.start), "--to", str(counts.after.end))
    r = entitlements("report", counts.region, *days, *capabilities, *known, "--json", "--db", db)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def _drawn(report: Any) -> dict[str, Any]:
    """What a picture and a report have in common: the counts and the rule switches."""
    return {k: v for k, v in as_json(report).items() if k in ("series", "rule_switches")}


def test_cli_png_draws_reports_counts_before_and_after(
    china: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, drawn: list[Any]
) -> None:
    """The picture is a PNG; the counts drawn after the commands are `report`'s on a copy of
    the store where they were applied, those before are `report`'s on the store; the store
    records nothing (its files change only when `report` runs on it, at the end)."""
    file = tmp_path / "now.jsonl"
    file.write_text("".join(json.dumps(c) + "\n" for c in NOW))
    (tmp_path / "pictures").mkdir()
    png = tmp_path / "pictures" / "cn.png"
    position, files = _position(china), _files(tmp_path)
    r = entitlements("what-if", str(file), "--png", str(png), "--json", "--db", china)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["png"] == str(png)
    assert png.read_bytes().startswith(PNG)
    assert f"picture written to {png}" in r.stderr.replace("\n", "")
    assert {k: v for k, v in _files(tmp_path).items() if k != "cn.png"} == files
    assert _position(china) == position
    (counts,) = drawn
    assert counts.region == "CN"
    assert (str(counts.after.start), str(counts.after.end)) == ("2020-03-18", "2020-09-05")
    assert counts.after.series != counts.before.series
    applied = f"sqlite:///{tmp_path_factory.mktemp('applied') / 'applied.db'}"
    with open_engine(applied) as engine:
        engine.apply(read_jsonl(scenario_file("china-2020.jsonl")))
        assert {r.status for r in engine.apply(NOW)} == {"applied"}
    assert _drawn(counts.after) == {k: _report(applied, counts)[k] for k in _drawn(counts.after)}
    before = _report(china, counts)
    assert _drawn(counts.before) == {k: before[k] for k in _drawn(counts.before)}


def test_cli_png_as_known_then_over_a_window(china: str, tmp_path: Path, drawn: list[Any]) -> None:
    """--from/--to are the days drawn (00:00 UTC in [from, to)), --as-known-at the belief:
    as known on 20 Oct the counts before are `report --as-known-at`'s; text output too."""
    file = tmp_path / "earlier.jsonl"
    file.write_text(json.dumps(EARLIER) + "\n")
    png = tmp_path / "cn.png"
    window = ("--from", "2020-04-01", "--to", "2020-07-01", "--as-known-at", "2020-10-20")
    r = entitlements("what-if", str(file), *window, "--png", str(png), "--db", china)
    assert r.returncode == 0, r.stderr
    assert "picture written to" in r.stderr and "nothing recorded" in r.stdout
    assert png.read_bytes().startswith(PNG)
    (counts,) = drawn
    assert (str(counts.after.start), str(counts.after.end)) == ("2020-04-01", "2020-06-30")
    report = _report(china, counts, "--as-known-at", "2020-10-20")
    assert _drawn(counts.before) == {k: report[k] for k in _drawn(counts.before)}
    free = [(d["day"], d["counts"]["free"]) for d in as_json(counts.after)["series"][0]["days"]]
    assert dict(free)["2020-05-10"] == 0 and dict(free)["2020-04-30"] == 1


def test_cli_png_refuses_a_bad_path_or_region_in_one_line(
    china: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each is one line naming the option, exit 2, nothing printed on stdout, no picture,
    nothing recorded; a write that fails (a full disk, say) too, before anything is printed."""
    file = tmp_path / "earlier.jsonl"
    file.write_text(json.dumps(EARLIER) + "\n")
    both = tmp_path / "both.jsonl"
    us = {"command": "revoke_hosting", "account_id": "us-pro-01", "reason": "audit"}
    both.write_text(json.dumps(EARLIER) + "\n" + json.dumps({**us, "effective_at": "2020-07-01"}))
    png = str(tmp_path / "x.png")
    position, files = _position(china), _files(tmp_path)
    cases = [
        ((file, "--png", str(tmp_path / "no" / "x.png")), "--png: cannot write"),
        ((file, "--png", str(tmp_path)), "--png: cannot write"),
        ((file, "--png", png, "--region", "ZZ"), "--region: no account or rule"),
        ((file, "--region", "CN"), "--region: only with --png"),
        ((both, "--png", png), "--region: the what-if changes answers in CN, US"),
    ]
    for args, said in cases:
        r = entitlements("what-if", *map(str, args), "--json", "--db", china)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stdout == "" and r.stderr.startswith(f"error: {said}"), (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    ok = entitlements("what-if", str(both), "--png", png, "--region", "US", "--db", china)
    assert ok.returncode == 0, ok.stderr
    Path(png).unlink()

    def full(*_: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pictures, "save_png", full)
    r = entitlements("what-if", str(file), "--png", png, "--db", china)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == f"error: --png: cannot write {png!r}: No space left on device"
    assert _files(tmp_path) == files and _position(china) == position


@pytest.fixture
def client(china: str) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    tokens = open_tokens(china)
    headers = {
        role: {"Authorization": f"Bearer {tokens.create(f'{role}-1', role)}"}
        for role in ("checker", "auditor")
    }
    with TestClient(create_app(china, follow=False), raise_server_exceptions=False) as c:
        yield c, headers


def test_http_what_if_for_auditors(client: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    c, headers = client
    body = {"commands": [EARLIER], "from": "2020-01-01"}
    assert c.post("/v1/what-if", json=body, headers=headers["checker"]).status_code == 403
    r = c.post("/v1/what-if", json=body, headers=headers["auditor"])
    assert r.status_code == 200, r.text
    answer = r.json()
    assert {
        (x["account_id"], x["capability"], x["from"], x["to"]) for x in answer["changes"]
    } == LOST
    assert answer["results"][0]["item"] == 1
    bad = c.post(
        "/v1/what-if",
        json={"commands": [EARLIER, {**EARLIER, "effective_at": "x"}]},
        headers=headers["auditor"],
    )
    assert bad.status_code == 422 and "item 2" in bad.text and "effective_at" in bad.text
    late = c.post("/v1/what-if", json={**body, "to": "1999-01-01"}, headers=headers["auditor"])
    assert late.status_code == 422 and "to" in late.text
    odd = c.post("/v1/what-if", json={**body, "until": "x"}, headers=headers["auditor"])
    assert odd.status_code == 422 and "until" in odd.text
    check = c.get("/v1/accounts/cn-free-01/can/host?at=2020-05-10", headers=headers["checker"])
    assert check.json()["allowed"] is True  # nothing recorded
