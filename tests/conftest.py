"""Shared fixtures: a fresh store per test, and the china-2020 scenario files; and how the
suite is shared between pytest-xdist's worker processes (see `pytest_collection_modifyitems`)."""

from __future__ import annotations

import atexit
import compileall
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import pytest

from entitlements import open_engine
from entitlements.application.engine import Engine

#: The installed console script, beside this interpreter (CI does not put the venv on PATH).
CLI = str(Path(sys.executable).with_name("entitlements"))

SCENARIOS = Path(__file__).resolve().parents[1] / "entitlements" / "scenarios"
SHARED_SCENARIOS = Path(__file__).resolve().parents[2] / "shared" / "scenarios"


def scenario_file(name: str) -> Path:
    """The shared scenario file when the shared folder is beside the repo, else our copy."""
    shared = SHARED_SCENARIOS / name
    return shared if shared.exists() else SCENARIOS / name


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def registrations(accounts: list[str]) -> list[dict[str, Any]]:
    """Sign-ups of `accounts` (US, pro, online, from 2020-01-01: each may host)."""
    return [
        {
            "command": "register_account",
            "account_id": a,
            "region": "US",
            "plan": "pro",
            "channel": "online",
            "effective_at": "2020-01-01",
        }
        for a in accounts
    ]


PG_SERVER = os.environ.get("ENTITLEMENTS_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
#: Each pytest process gets its own database (each xdist worker is one: its id is in the
#: name), so two runs, or two workers of one run, never share a schema.
PG_DATABASE_PREFIX = "entitlements_test_"
_database: str | None = None  # this process's database, once created


def postgres_available() -> str | None:
    """Why PostgreSQL cannot be used here, or None when it can (creating this run's database
    on first use; it is dropped when the run's process exits)."""
    global _database
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    if _database:
        return None
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")  # gw0, gw1, ... under xdist
    name = f"{PG_DATABASE_PREFIX}{worker}_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"CREATE DATABASE {name}")
            # A test database dies with its run, so a commit need not wait for the disk
            # (3 ms a commit here, 0.05 ms without): this database only, never the server.
            # What the tests prove does not change: no test crashes this server (the
            # restart-under-load test restarts a throwaway cluster of its own).
            conn.execute(f"ALTER DATABASE {name} SET synchronous_commit = off")
    except psycopg.Error as e:
        return f"no usable PostgreSQL server at {PG_SERVER}: {str(e).splitlines()[0]}"
    _database = name
    # atexit, not a hook of this conftest: benchmarks/ imports postgres_url without loading
    # this file as a plugin. It runs on failures too, after every subprocess of the run.
    atexit.register(_drop_database, name, os.getpid())
    return None


def _drop_database(name: str, owner_pid: int) -> None:
    """Drop this run's database, closing whatever connections are left (PostgreSQL >= 13)."""
    if os.getpid() != owner_pid:  # a forked child inherits atexit handlers: not its database
        return
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=3) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def fresh_postgres_schema() -> str:
    """Empty this process's database's public schema (the tests of one process, a run or
    one xdist worker, are sequential); returns the store URL."""
    import psycopg

    url = f"{PG_SERVER}/{_database}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return url


def postgres_template(build: Callable[[str], None]) -> str:
    """A new database of this process's, filled by `build(url)`, to copy stores from (dropped
    when the process exits). Nothing may stay connected to it: build with processes that end,
    or close what you open."""
    import psycopg

    name = f"{_database}_t{len(_templates)}"
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    _templates.append(name)
    atexit.register(_drop_database, name, os.getpid())
    build(f"{PG_SERVER}/{name}")
    return name


_templates: list[str] = []  # this process's template databases


def postgres_copy_of(template: str) -> str:
    """This process's database, made again as a copy of `template` (the tests of a process
    are sequential, so nothing else uses it); returns the store URL. On 2 cores: ~0.2 s."""
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {_database} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {_database} TEMPLATE {template}")
        conn.execute(f"ALTER DATABASE {_database} SET synchronous_commit = off")
    return f"{PG_SERVER}/{_database}"


class StoreCopies:
    """Stores built once (per module and kind) and copied for each test, which may change its
    copy: an SQLite file copied, a PostgreSQL database made from a template. A test sees the
    store the recipe built, as if built for it alone, without building it again."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.built: dict[str, str] = {}  # "sqlite" -> the built file; "postgres" -> template

    def copy(self, store_url: str, build: Callable[[str, Path], None]) -> str:
        """The test's fresh store (`store_url`, from the fixture) as a copy of the store
        `build(url, folder)` makes; returns the store URL to use."""
        if store_url.startswith("sqlite:///"):
            if "sqlite" not in self.built:
                self.built["sqlite"] = str(self.folder / "built.db")
                build(f"sqlite:///{self.built['sqlite']}", self.folder)
            target = store_url.removeprefix("sqlite:///")
            for suffix in ("", "-wal", "-shm"):  # whatever SQLite left beside the file
                if Path(self.built["sqlite"] + suffix).exists():
                    shutil.copyfile(self.built["sqlite"] + suffix, target + suffix)
            return store_url
        if "postgres" not in self.built:
            self.built["postgres"] = postgres_template(lambda url: build(url, self.folder))
        return postgres_copy_of(self.built["postgres"])


@pytest.fixture(scope="module")
def store_copies(tmp_path_factory: pytest.TempPathFactory) -> StoreCopies:
    """Stores built once for this module, copied for each test (see StoreCopies)."""
    return StoreCopies(tmp_path_factory.mktemp("built"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """A fresh store of each kind: an SQLite file, and a PostgreSQL schema emptied for the
    test. Without a server the PostgreSQL half skips, saying why, except under CI=true."""
    monkeypatch.setenv("ENTITLEMENTS_CACHE", str(tmp_path / "cache"))  # index snapshots
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'entitlements.db'}"
    return postgres_or_skip()


@pytest.fixture
def postgres_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh PostgreSQL store only (for tests of PostgreSQL itself)."""
    monkeypatch.setenv("ENTITLEMENTS_CACHE", str(tmp_path / "cache"))
    return postgres_or_skip()


def postgres_or_skip() -> str:
    """A fresh PostgreSQL schema's URL; skip saying why without a server (fail under CI)."""
    why_not = postgres_available()
    if why_not:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI=true: {why_not}")
        pytest.skip(why_not)
    return fresh_postgres_schema()


@contextmanager
def china_store(kind: str, folder: Path) -> Iterator[str]:
    """A china-2020 store of `kind` ("sqlite" or "postgres") with its cache in `folder`, for
    the tests of one module that only read it (module-scoped fixtures); yields its URL."""
    url = f"sqlite:///{folder / 'store.db'}" if kind == "sqlite" else postgres_or_skip()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ENTITLEMENTS_CACHE", str(folder / "cache"))
        with open_engine(url) as engine:
            engine.apply(read_jsonl(scenario_file("china-2020.jsonl")))
        yield url


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    with open_engine(store_url) as e:
        yield e


def _require(why_not: str) -> NoReturn:
    """Skip saying why, or fail under CI=true, where every PostgreSQL test must run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"required under CI=true: {why_not}")
    pytest.skip(why_not)


def postgres_bindir() -> Path | None:
    """Where initdb and pg_ctl are: `pg_config --bindir`, else the newest Debian install."""

    def version(bindir: Path) -> list[int]:
        return [int(part) for part in bindir.parent.name.split(".") if part.isdigit()]

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        ).stdout
        candidates.insert(0, Path(out.strip()))
    return next(
        (d for d in candidates if (d / "initdb").exists() and (d / "pg_ctl").exists()), None
    )


class ThrowawayPostgres:
    """A PostgreSQL cluster of one test's own, in a temporary directory, on a free loopback
    port, trust auth: tests may restart it without touching the machine's server."""

    def __init__(self, bindir: Path, root: Path, as_user: list[str]) -> None:
        self.bindir, self.root, self.as_user = bindir, root, as_user
        self.data, self.log = root / "data", root / "server.log"
        with socket.socket() as s:  # a free port, released for the server to take
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [*self.as_user, str(self.bindir / tool), *args]
        done = subprocess.run(
            cmd, cwd=self.root, capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed: {done.stderr}{log}")

    def start(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        self.start_again()

    def start_again(self) -> None:
        """Start the existing cluster (after `stop`: an outage), on the same port; no initdb."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def restart(self) -> None:
        """Stop (fast: sessions are cut) and start again with the same options."""
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-m", "fast", "-w", "restart"
        )

    def stop(self) -> None:
        """Stop it if it runs; never raises, so it cannot hide the test's own failure."""
        if (self.data / "postmaster.pid").exists():
            cmd = [
                *self.as_user,
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                "immediate",
                "-w",
                "stop",
            ]
            subprocess.run(cmd, cwd=self.root, capture_output=True, timeout=60, check=False)


@pytest.fixture
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    """A started throwaway cluster, stopped and removed afterwards, also when the test fails.
    initdb and postgres refuse root: as root they run as the `postgres` OS user."""
    bindir = postgres_bindir()
    if bindir is None:
        _require("no PostgreSQL server binaries (initdb, pg_ctl) for a throwaway cluster")
    as_user: list[str] = []
    if os.geteuid() == 0:
        if not shutil.which("runuser"):
            _require("running as root, and no runuser to start PostgreSQL as the postgres user")
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(
        tempfile.mkdtemp(prefix="entitlements-pg-")
    )  # not tmp_path: its parents are private
    cluster = ThrowawayPostgres(bindir, root, as_user)
    try:
        if as_user:
            try:
                shutil.chown(root, user="postgres")
            except LookupError:
                _require("running as root, and no postgres OS user to run PostgreSQL as")
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


# -- sharing the suite between xdist workers ------------------------------------------------
#
# `--dist loadgroup` sends the tests of one group to one worker, in file order. xdist passes a
# test's group from the worker to the controller by renaming the test, which pytest 9.2 no
# longer allows (pytest-xdist issue 1386: the groups are silently ignored). So the workers
# write the groups to a file of this run, and the controller's scheduler reads it.

#: The group of the `timing` tests: one worker runs them, one after another.
TIMING_GROUP = "timing"


def _groups_file(config: pytest.Config) -> Path:
    """Where this run's workers leave {test id: group} for the controller."""
    workerinput = getattr(config, "workerinput", None)
    run = workerinput["testrunuid"] if workerinput else config.option.testrunuid
    return Path(tempfile.gettempdir()) / f"entitlements-xdist-groups-{run}.json"


def _grouping(config: pytest.Config) -> bool:
    """Whether this run is `--dist loadgroup`: the controller's `dist`, or a worker's
    `loadgroup` (xdist sets a worker's own `dist` to "no"). Asked of the options, not of
    the plugin manager: xdist loaded by `-p xdist.plugin` is registered under that name,
    and `hasplugin("xdist")` is then False (it was, and no test had a group)."""
    options = config.option
    return getattr(options, "dist", None) == "loadgroup" or bool(
        getattr(options, "loadgroup", False)
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """The controller names the run, so that it and its workers know the groups file; and
    compiles our packages once (see `_compile_once`)."""
    if hasattr(config, "workerinput"):
        return
    _compile_once()
    if _grouping(config):
        config.option.testrunuid = config.option.testrunuid or secrets.token_hex(8)


def _compile_once() -> None:
    """Write our modules' bytecode before any worker or CLI process starts. Where
    PYTHONDONTWRITEBYTECODE is set (this machine sets it), every process the suite starts
    (its workers and some hundreds of CLI and server processes) would otherwise compile
    them again: about 0.1 s of CPU each. Python still checks each file's bytecode against its
    source, so an edited module is compiled afresh, as without this."""
    root = Path(__file__).resolve().parents[1]
    for package in ("entitlements", "projections", "tests", "benchmarks"):
        compileall.compile_dir(root / package, quiet=1)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _grouping(config) and not hasattr(config, "workerinput"):
        _groups_file(config).unlink(missing_ok=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On each worker, give each test at most one group, and write them down:

    - `timing` tests (they kill, restart, drain or race real processes against a clock)
      all go to one worker, one after another, so two of them never compete for the CPU;
    - tests that share a store built by a module- or session-scoped fixture of ours go to
      one worker in file order, so the store is built once and used as the module expects.

    A fixture group that holds a `timing` test joins the timing group whole; an
    `xdist_group` mark of a test's own is kept. Two tests with one id are refused: xdist
    would run only one of them, silently."""
    twice = [nodeid for nodeid, n in Counter(item.nodeid for item in items).items() if n > 1]
    if twice:
        raise pytest.UsageError(f"tests with the same id (give each its own): {sorted(twice)}")
    if not (_grouping(config) and hasattr(config, "workerinput")):
        return
    timing = {item for item in items if item.get_closest_marker("timing")}
    shared = {item: group for item in items if (group := _shared_fixture(item))}
    shared_with_timing = {shared[item] for item in timing if item in shared}
    groups: dict[str, str] = {}
    for item in items:
        group = shared.get(item)
        if item in timing or group in shared_with_timing:
            group = TIMING_GROUP
        elif marked := item.get_closest_marker("xdist_group"):  # a test's own group, if any
            group = str(marked.args[0] if marked.args else marked.kwargs.get("name", "default"))
        if group:
            groups[item.nodeid] = group
    path = _groups_file(config)  # every worker collects the same tests: the same file
    mine = path.with_suffix(f".{config.workerinput['workerid']}")
    mine.write_text(json.dumps(groups))
    os.replace(mine, path)


def _shared_fixture(item: pytest.Item) -> str | None:
    """The first module- or session-scoped fixture of this project the test uses, as
    `module::name` or `where::name` (pytest's own and plugins' fixtures have no `where`),
    else None. A module-scoped fixture of a conftest is one per module: one group each."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    for name in info.names_closure:
        for fixturedef in info.name2fixturedefs.get(name, ()):
            if fixturedef.scope == "module" and fixturedef.baseid:
                return f"{item.nodeid.split('::')[0]}::{name}"
            if fixturedef.scope == "session" and fixturedef.baseid:
                return f"{fixturedef.baseid}::{name}"
    return None


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """loadgroup's scheduler, with the groups the workers wrote down (biggest group first)."""
    if not _grouping(config):
        return None
    from xdist.scheduler import LoadGroupScheduling

    class WrittenGroups(LoadGroupScheduling):  # type: ignore[misc]
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # read once: every worker has collected by now
                path = _groups_file(config)
                self.groups = json.loads(path.read_text()) if path.exists() else {}
            return self.groups.get(nodeid, nodeid)

    return WrittenGroups(config, log)
