"""`entitlements report REGION --from --to ...` on the china-2020 store, SQLite and
PostgreSQL: the table, CSV and JSON give the same counts (and the same each time), the
counts are `check`'s, `--png` writes a picture, bad input is one line naming the option
(exit 2), and the demo writes the CN 2020 picture the command would. In-process
(`cli.run`, the console script's own entry) to stay fast; the demo and one error go
through the installed console script."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from matplotlib.image import imread

from entitlements import cli, open_engine
from tests.conftest import china_store
from tests.e2e.cli_runner import entitlements
from tests.e2e.test_cli import run as run_script
from tests.e2e.test_cli_errors import one_line_error

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
YEAR = ("CN", "--from", "2020-01-01", "--to", "2020-12-31")


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def china(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One china-2020 store of each kind for the module; its URL (never rebuilt: the
    first report brings the read models level itself)."""
    folder = tmp_path_factory.mktemp("report")
    with china_store(request.param, folder) as url:
        yield url


def report(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, str, str]:
    code = cli.run(["--db", url, "report", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def as_json(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> dict[str, Any]:
    code, out, err = report(capsys, url, *args, "--json")
    assert code == cli.EXIT_OK, err
    parsed: dict[str, Any] = json.loads(out)
    return parsed


def test_table_csv_and_json_say_the_same_each_time(
    china: str, capsys: pytest.CaptureFixture[str]
) -> None:
    first = as_json(capsys, china, *YEAR)
    assert as_json(capsys, china, *YEAR) == first  # the same door twice
    days = first["series"][0]["days"]
    assert len(days) == 366 and days[0]["day"] == "2020-01-01" and days[-1]["day"] == "2020-12-31"
    assert first["counted_at"] == "00:00 UTC of each day"

    code, out, _ = report(capsys, china, *YEAR, "--csv")
    assert code == cli.EXIT_OK
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["day"] for r in rows] == [d["day"] for d in days]
    for row, d in zip(rows, days, strict=True):
        assert {p: int(row[p]) for p in first["plans"]} == d["counts"]
        assert int(row["total"]) == d["total"] == sum(d["counts"].values())

    code, out, _ = report(capsys, china, *YEAR)
    assert code == cli.EXIT_OK
    table = {
        m[0]: [int(n) for n in m[1].replace("│", " ").split()]
        for m in re.findall(r"│ (2020-\d\d-\d\d) │([\d │]+)│", out)
    }
    assert len(table) == 366
    for d in days:
        assert table[d["day"]] == [*(d["counts"][p] for p in first["plans"]), d["total"]]
    assert "free_hosting_suspended on" in out  # the rule switch, on its day's row


def test_the_counts_are_what_check_says(china: str, capsys: pytest.CaptureFixture[str]) -> None:
    asked = ("CN", "--from", "2020-09-10", "--to", "2020-10-20", "--as-known-at", "2020-10-20")
    counted = as_json(capsys, china, *asked, "--capability", "host", "--capability", "join")
    with open_engine(china) as engine:
        cn = [a for a in engine.facts.accounts if engine.facts.region_of[a] == "CN"]
        for series in counted["series"]:
            for d in series["days"]:
                at = datetime.fromisoformat(d["day"]).replace(tzinfo=UTC)
                allowed = [
                    engine.check(a, series["capability"], at=at, as_known_at="2020-10-20").allowed
                    for a in cn
                ]
                assert d["total"] == sum(allowed), (series["capability"], d["day"])


def test_as_known_at_shows_what_was_believed(
    china: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """cn-ent-02's revocation, recorded on 1 Nov, backdated to 15 Sep."""
    asked = ("CN", "--from", "2020-09-20", "--to", "2020-09-20")
    now = as_json(capsys, china, *asked)["series"][0]["days"][0]["counts"]
    then = as_json(capsys, china, *asked, "--as-known-at", "2020-10-20")["series"][0]["days"][0]
    assert then["counts"]["enterprise"] == now["enterprise"] + 1


def test_png_is_a_picture_and_the_same_each_run(
    china: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png, again = tmp_path / "cn.png", tmp_path / "again.png"
    code, out, err = report(capsys, china, *YEAR, "--png", str(png), "--json")
    assert code == cli.EXIT_OK, err
    assert err.strip().splitlines()[-1] == f"picture written to {png}"
    assert json.loads(out)["region"] == "CN"  # stdout stays machine-readable
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    height, width = imread(png).shape[:2]
    assert width > 800 and height > 300
    assert report(capsys, china, *YEAR, "--png", str(again), "--csv")[0] == cli.EXIT_OK
    assert again.read_bytes() == png.read_bytes()


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("XX", "--from", "2020-01-01", "--to", "2020-01-02"), "region"),
        (("CN", "--from", "2020-02-01", "--to", "2020-01-01"), "--from"),
        (("CN", "--from", "2020-13-01", "--to", "2020-12-31"), "--from"),
        (("CN", "--from", "2020-01-01", "--to", "tomorrow"), "--to"),
        (("CN", "--from", "2010-01-01", "--to", "2020-12-31"), "--to"),
        (("CN", "--from", "9999-12-31", "--to", "9999-12-31"), "--from"),
        (("CN", "--from", "1899-12-31", "--to", "1900-01-01"), "--from"),
        (
            ("CN", "--from", "2020-01-01", "--to", "2020-01-02", "--as-known-at", "x"),
            "--as-known-at",
        ),
        (
            ("CN", "--from", "2020-01-01", "--to", "2020-01-02", "--capability", "fly"),
            "--capability",
        ),
        (
            ("CN", "--from", "2020-01-01", "--to", "2020-01-02", "--png", "/no/such/dir/x.png"),
            "--png",
        ),
    ],
)
def test_bad_input_is_one_line_naming_the_option(
    china: str, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], option: str
) -> None:
    code, out, err = report(capsys, china, *args)
    assert code == cli.EXIT_MALFORMED
    lines = [line for line in err.splitlines() if not line.startswith("SQL read models")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {option}:"), err
    assert out == ""


def test_the_console_script_says_it_in_one_line_and_help_says_inclusive(china: str) -> None:
    result = run_script(china, "report", "CN", "--from", "2021-01-01", "--to", "2020-01-01")
    assert result.returncode == 2
    assert one_line_error(result).startswith("error: --from:")
    help_text = entitlements("report", "--help").stdout
    assert "inclusive" in help_text and "00:00 UTC" in help_text


def test_the_demo_writes_the_cn_2020_picture_the_report_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = entitlements("demo", "--db", "demo.db", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found = re.search(r"^4\. How many CN accounts could host.*: (\S+\.png)$", result.stdout, re.M)
    assert found, result.stdout
    picture = Path(found[1])
    store = picture.with_name("demo.db")
    assert picture.read_bytes().startswith(PNG_SIGNATURE)
    again = tmp_path / "again.png"
    code, _, err = report(capsys, f"sqlite:///{store}", *YEAR, "--png", str(again), "--csv")
    assert code == cli.EXIT_OK, err
    assert again.read_bytes() == picture.read_bytes()
