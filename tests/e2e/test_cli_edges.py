"""The edges users hit at the command line (issue 17): output redirected while stderr is a
terminal, the store a failed or demo run leaves behind, `--db` in any position, and error
lines that stay short and say what is wrong. Through the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI, registrations
from tests.e2e.cli_runner import entitlements


def environ(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("ENTITLEMENTS_DB", "ENTITLEMENTS_DEBUG")
    }
    return {**env, **extra}


def run(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """The command in this process (cli_runner.py); a terminal's bar and the peak memory of
    a real process below start the console script."""
    return entitlements(*args, env=environ(**env), cwd=cwd)


def write_lines(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The error, asserting it is exactly one line on stderr and no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, repr(result.stderr)
    return result.stderr.strip()


# -- item 1: stdout redirected, stderr a terminal -----------------------------------------


def test_apply_results_go_to_stdout_when_stderr_is_a_terminal(tmp_path: Path) -> None:
    """`entitlements apply FILE > results.jsonl` on a terminal: the progress bar is drawn on
    stderr (a real pty), and every result lands in the file, none on the terminal."""
    commands = write_lines(
        tmp_path / "300.jsonl", registrations([f"acct-{i:03d}" for i in range(300)])
    )
    master, slave = os.openpty()
    terminal = bytearray()

    def drain() -> None:  # the terminal's reader: a full pty would block the writer
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the slave side closed (EIO on Linux)
                return
            if not chunk:
                return
            terminal.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    results = tmp_path / "results.jsonl"
    with results.open("wb") as stdout:
        done = subprocess.run(
            [CLI, "--db", str(tmp_path / "e.db"), "apply", str(commands)],
            stdout=stdout,
            stderr=slave,
            env=environ(TERM="xterm-256color", COLUMNS="100"),
            timeout=300,
        )
    os.close(slave)
    reader.join(timeout=10)
    os.close(master)
    assert done.returncode == 0, terminal.decode(errors="replace")
    lines = results.read_text().splitlines()
    assert len(lines) == 300, terminal.decode(errors="replace")[-2000:]
    assert [json.loads(line)["line"] for line in lines] == list(range(1, 301))
    shown = terminal.decode(errors="replace")
    assert '"command_id"' not in shown  # no result on the terminal
    assert "apply" in shown  # the bar was drawn there


# -- item 11: --db in any position --------------------------------------------------------


def test_db_is_taken_before_or_after_the_command_in_any_position(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    commands = write_lines(tmp_path / "c.jsonl", registrations(["acct-1"]))
    assert run("apply", str(commands), "--db", db).returncode == 0
    for args in (
        ("--db", db, "check", "acct-1", "host"),
        ("check", "acct-1", "host", "--db", db),
        ("check", "--db", db, "acct-1", "host"),
        ("check", "acct-1", "--db", db, "host", "--json"),
    ):
        result = run(*args, cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr)
        assert "acct-1 host" in result.stdout or '"allowed": true' in result.stdout, args
    for others in (
        ("audit", "verify", "--db", db),
        ("audit", "--db", db, "verify"),
        ("token", "list", "--db", db),
        ("history", "--db", db, "acct-1", "--json"),
    ):
        result = run(*others, cwd=tmp_path)
        assert result.returncode == 0, (others, result.stderr)
    assert not (tmp_path / "entitlements.db").exists()  # no command fell back to the default


def test_the_environment_names_the_store_when_no_db_is_given(tmp_path: Path) -> None:
    db = str(tmp_path / "env.db")
    commands = write_lines(tmp_path / "c.jsonl", registrations(["acct-1"]))
    assert run("apply", str(commands), ENTITLEMENTS_DB=db).returncode == 0
    result = run("check", "acct-1", "host", "--json", cwd=tmp_path, ENTITLEMENTS_DB=db)
    assert result.returncode == 0 and json.loads(result.stdout)["allowed"] is True
    # --db wins over the environment, wherever it stands
    other = str(tmp_path / "nope.db")
    result = run("check", "acct-1", "host", "--db", other, cwd=tmp_path, ENTITLEMENTS_DB=db)
    assert result.returncode == 4 and "nope.db" in one_line_error(result)


# -- item 2: apply streams the file --------------------------------------------------------

#: What an `apply` process may peak at while validating a 200,000-line file: the file's
#: lines are not held (before issue 17 it held them all: 537 MB here, ~2.5 KB a line; now
#: ~53 MB, about what the process takes to start).
APPLY_PEAK_MB = 150

PEAK_RSS = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(done.stderr)
print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


@pytest.mark.slow
def test_validating_a_long_file_holds_none_of_its_lines(tmp_path: Path) -> None:
    """The first pass validates one line at a time: a 200,000-line file with a bad last line
    is refused (line and field named, nothing applied, no store created) by a process whose
    peak RSS is far below what holding the lines took."""
    commands = tmp_path / "long.jsonl"
    with commands.open("w") as f:
        for line in registrations([f"acct-{i:07d}" for i in range(200_000)]):
            f.write(json.dumps(line) + "\n")
        f.write(json.dumps({"command": "register_account", "account_id": "late"}) + "\n")
    db = tmp_path / "e.db"
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, CLI, "--db", str(db), "apply", str(commands)],
        capture_output=True,
        text=True,
        env=environ(),
        timeout=300,
    )
    code, peak_kb = (int(x) for x in done.stdout.split())
    assert code == 2, done.stderr
    assert done.stderr.startswith("malformed: line 200001, field 'effective_at'"), done.stderr
    assert peak_kb < APPLY_PEAK_MB * 1024, f"apply peaked at {peak_kb // 1024} MB"
    assert "(nothing applied)" in done.stderr and not db.exists()


def test_a_file_that_changes_between_the_passes_is_one_line_saying_so(tmp_path: Path) -> None:
    """What the first pass counted is what the second must read: more, fewer or a line that
    no longer validates stop `apply` (what it printed before was applied)."""
    from entitlements.cli import FileChanged, _second_pass

    path = write_lines(tmp_path / "c.jsonl", registrations(["a-1", "a-2"]))
    assert [n for n, _ in _second_pass(str(path), 2)] == [1, 2]
    for total, said in ((1, "grew after it was validated: line 2"), (3, "shrank")):
        with pytest.raises(FileChanged, match=said):
            list(_second_pass(str(path), total))
    path.write_text(path.read_text() + '{"command": "nope"}\n')
    with pytest.raises(FileChanged, match="changed after it was validated: line 3"):
        list(_second_pass(str(path), 3))


# -- item 3: no store is left where nothing was applied ----------------------------------


def test_a_malformed_or_empty_file_creates_no_store(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    bad = write_lines(tmp_path / "bad.jsonl", [*registrations(["a-1"]), {"command": "nope"}])
    result = run("apply", str(bad), "--db", str(db))
    assert result.returncode == 2 and "(nothing applied)" in one_line_error(result)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert run("apply", str(empty), "--db", str(db)).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "empty.jsonl"]


def test_demo_builds_its_store_at_db_to_explore_after(tmp_path: Path) -> None:
    result = run("demo", "--db", "demo.db", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--db demo.db" in result.stdout and (tmp_path / "cn-2020-host.png").exists()
    check = run(
        "check",
        "cn-ent-02",
        "host",
        "--at",
        "2020-10-01",
        "--json",
        "--db",
        "demo.db",
        cwd=tmp_path,
    )
    assert check.returncode == 0 and json.loads(check.stdout)["allowed"] is False
    again = run("demo", "--db", "demo.db", cwd=tmp_path)  # its own store: the same story
    assert again.returncode == 0 and again.stdout == result.stdout, again.stderr
    assert (
        "position 56" in run("check", "cn-free-01", "host", "--db", "demo.db", cwd=tmp_path).stdout
    )
    extra = write_lines(tmp_path / "more.jsonl", registrations(["x-1"]))
    assert run("apply", str(extra), "--db", "demo.db", cwd=tmp_path).returncode == 0
    data = run("demo", "--db", "demo.db", cwd=tmp_path)  # now a store of data: never reused
    assert data.returncode == 2 and "not the demo's store" in one_line_error(data)
    other = tmp_path / "notes.db"
    other.write_bytes(b"SQLite format 3\x00 but not really")
    refused = run("demo", "--db", "notes.db", cwd=tmp_path)
    assert refused.returncode == 2 and "not the demo's store" in one_line_error(refused)
    assert other.read_bytes() == b"SQLite format 3\x00 but not really"
    pg = run("demo", "--db", "postgresql://nobody@127.0.0.1:1/x", cwd=tmp_path)
    assert pg.returncode == 2 and "SQLite file" in one_line_error(pg)


def test_demo_without_db_leaves_nothing_behind(tmp_path: Path) -> None:
    temp, work = tmp_path / "tmp", tmp_path / "work"
    temp.mkdir()
    work.mkdir()
    result = run("demo", cwd=work, TMPDIR=str(temp), ENTITLEMENTS_DB=str(tmp_path / "real.db"))
    assert result.returncode == 0, result.stderr
    assert "as known at 2020-10-20: yes" in result.stdout
    assert list(temp.iterdir()) == [] and list(work.iterdir()) == []
    assert not (tmp_path / "real.db").exists()  # $ENTITLEMENTS_DB is not the demo's


# -- item 13: error lines that say what is wrong, briefly ---------------------------------


def test_an_unknown_account_is_an_error_line_cut_short(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    assert (
        run(
            "apply", str(write_lines(tmp_path / "c.jsonl", registrations(["a-1"]))), "--db", db
        ).returncode
        == 0
    )
    result = run("check", "nobody", "host", "--db", db)
    assert result.returncode == 3
    assert one_line_error(result) == "error: unknown account 'nobody'"
    huge = "x" * 60_000
    result = run("check", huge, "host", "--db", db)
    error = one_line_error(result)
    assert result.returncode == 3 and error.startswith("error: unknown account 'xxx")
    assert len(error) <= 110 and error.endswith("...'")


def test_a_store_url_with_a_bad_port_is_one_line_naming_db(tmp_path: Path) -> None:
    for url, what in (
        ("postgresql://::::/", "not a number"),
        ("postgresql://h:99999/d", "1-65535"),
    ):
        result = run("check", "a", "host", "--db", url, cwd=tmp_path)
        error = one_line_error(result)
        assert result.returncode == 2 and error.startswith("error: --db: "), error
        assert what in error and "int()" not in error
        result = run("check", "a", "host", cwd=tmp_path, ENTITLEMENTS_DB=url)
        assert one_line_error(result).startswith("error: $ENTITLEMENTS_DB: ")


def test_bad_json_says_where_once(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"command": "x", "reason": "a\x01b"}\n')
    error = one_line_error(run("apply", str(bad), "--db", str(tmp_path / "s.db")))
    assert error.startswith("malformed: line 1: bad JSON at column 30: Invalid control character")
    assert "at at" not in error
