"""`entitlements explain ACCOUNT CAPABILITY --png FILE` on the china-2020 store, SQLite and
PostgreSQL: a PNG matplotlib reads back at the picture's size, the same bytes each run, the
JSON unchanged but for `png`, and a path that cannot be written refused in one line (exit 2)
with nothing left behind. In-process (`cli.run`, the console script's own entry) to stay
fast; one run goes through the installed console script."""

from __future__ import annotations

import errno
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from entitlements import cli, open_engine
from entitlements.cli import pictures
from tests.conftest import china_store, read_jsonl, scenario_file
from tests.e2e.test_cli import run as run_script

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ASKED = ("--at", "2020-10-01", "--as-known-at", "2020-10-20")  # fixed, so the bytes are too


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def china(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One china-2020 store of each kind for the module (explain only reads); its URL."""
    folder = tmp_path_factory.mktemp("picture")
    with china_store(request.param, folder) as url:
        yield url


def explain(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, str, str]:
    code = cli.run(["--db", url, "explain", "cn-ent-02", "host", *ASKED, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_picture_is_a_png_matplotlib_reads_back_the_same_each_run(
    china: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png, again = tmp_path / "cn-ent-02-host.png", tmp_path / "again.png"
    code, out, err = explain(capsys, china, "--png", str(png))
    assert code == cli.EXIT_OK, err
    assert err.strip().splitlines() == [f"picture written to {png}"]
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    height, width = imread(png).shape[:2]
    assert (width, height) == tuple(round(side * pictures.DPI) for side in pictures.SIZE)
    assert explain(capsys, china)[1] == out  # the paragraph itself is unchanged
    assert explain(capsys, china, "--png", str(again))[0] == cli.EXIT_OK
    assert again.read_bytes() == png.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.png", png.name]


def test_json_is_unchanged_but_for_the_file_it_names(
    china: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "x.png"
    code, out, _ = explain(capsys, china, "--json", "--png", str(png))
    assert code == cli.EXIT_OK
    with_png: dict[str, Any] = json.loads(out)
    assert with_png.pop("png") == str(png) and png.exists()
    assert with_png == json.loads(explain(capsys, china, "--json")[1])


@pytest.mark.parametrize("where", ["missing/x.png", ".", ""])
def test_a_path_that_cannot_be_written_is_one_line_naming_png(
    china: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    """A folder that does not exist, a folder itself, no name at all: exit 2 as for any bad
    option, one line naming --png, nothing on stdout, nothing left in the folder."""
    monkeypatch.chdir(tmp_path)
    code, out, err = explain(capsys, china, "--png", where)
    assert code == cli.EXIT_MALFORMED
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: --png: "), err
    assert list(tmp_path.iterdir()) == []


def test_a_write_failing_halfway_leaves_the_old_file_whole(
    china: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    png = tmp_path / "kept.png"
    png.write_bytes(b"the picture from before")

    def disk_full(self: Figure, fname: Any, **kw: Any) -> None:
        fname.write(PNG_SIGNATURE + b"half a picture")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", disk_full)
    code, _, err = explain(capsys, china, "--png", str(png))
    assert code == cli.EXIT_MALFORMED
    assert err.strip() == f"error: --png: cannot write {str(png)!r}: No space left on device"
    assert png.read_bytes() == b"the picture from before"
    assert [p.name for p in tmp_path.iterdir()] == [png.name]


def test_the_console_script_says_it_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the installed script (the runs above are in-process), on a store of one
    account: it checks the path before drawing anything."""
    monkeypatch.setenv("ENTITLEMENTS_CACHE", str(tmp_path / "cache"))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with open_engine(url) as engine:
        engine.apply(read_jsonl(scenario_file("china-2020.jsonl"))[:1])
    target = tmp_path / "no" / "p.png"
    done = run_script(url, "explain", "cn-free-01", "host", "--png", str(target))
    assert done.returncode == cli.EXIT_MALFORMED and done.stdout == ""
    assert done.stderr.strip() == (
        f"error: --png: cannot write {str(target)!r}: no folder {str(target.parent)!r}"
    )


def test_an_account_whose_events_reach_the_year_9999_is_drawn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Times up to the last microsecond of 9999 are on file; the picture's margin past them
    used to overflow (exit 4, OverflowError). It is drawn, the margin cut at 9999's end."""
    monkeypatch.setenv("ENTITLEMENTS_CACHE", str(tmp_path / "cache"))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    registered = read_jsonl(scenario_file("china-2020.jsonl"))[1]  # cn-pro-01
    closed = {
        "command": "close_subscription",
        "account_id": registered["account_id"],
        "effective_at": "9999-12-31T23:59:59.999999",
    }
    with open_engine(url) as engine:
        assert [r.status for r in engine.apply([registered, closed])] == ["applied"] * 2
    png = tmp_path / "far.png"
    code = cli.run(["--db", url, "explain", registered["account_id"], "host", "--png", str(png)])
    err = capsys.readouterr().err
    assert code == cli.EXIT_OK, err
    assert err.strip().splitlines() == [f"picture written to {png}"]
    assert imread(png).shape[:2] == tuple(round(s * pictures.DPI) for s in reversed(pictures.SIZE))
