"""Peak resident memory of a whole `entitlements apply` process, by the file's length, each
beside floors measured in the same run (issue 17, item 2).

    python -m benchmarks.apply_memory_figures --lines 100000 --lines 1000000 --json out.json
    python -m benchmarks.apply_memory_figures --lines 100000 --source /tmp/base  # older code

For each length N it writes a command file of N registrations of distinct accounts (and a
copy whose last line is malformed), then runs, each in a fresh process whose peak RSS is
read by its parent (`resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`):

- floor `python -c pass`, and a Python process that reads the file line by line;
- floor: a process that imports the command line (`entitlements.cli`) and exits;
- validate: `apply` of the malformed copy (refused at its last line: the first pass only);
- apply: `apply` of the file into a fresh SQLite store (stdout to /dev/null);
- floor: `apply` of one more line to the store just built: what any writer of that store
  holds (its check index and command book, which grow with the log, not with a file).

`--source DIR` runs the code in DIR (e.g. `git archive COMMIT | tar -x -C DIR`) instead of
this checkout's, with the same interpreter, so a baseline is measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: Runs argv in a child and prints its exit code, peak RSS (KiB, Linux) and wall seconds.
MEASURE = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
print(json.dumps({"code": done.returncode, "peak_kb": resource.getrusage(
    resource.RUSAGE_CHILDREN).ru_maxrss, "seconds": time.perf_counter() - started,
    "stderr": done.stderr.decode(errors="replace")[-300:]}))
"""

READ_LINES = "import sys\nfor line in open(sys.argv[1], 'rb'):\n    pass\n"


def write_file(path: Path, lines: int, bad_last: bool = False, name: str = "acct") -> Path:
    """N registrations of distinct accounts (and a malformed last line, if asked)."""
    with path.open("w") as f:
        for i in range(lines):
            f.write(
                f'{{"command": "register_account", "account_id": "{name}-{i:08d}", '
                '"region": "US", "plan": "pro", "channel": "online", '
                '"effective_at": "2020-01-01"}\n'
            )
        if bad_last:
            f.write('{"command": "register_account", "account_id": "late"}\n')
    return path


def measure(argv: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Peak RSS (MB) and seconds of argv, run by a fresh parent that has no other child,
    in `cwd` (not the checkout: `python -m`/`-c` put the working directory first on
    sys.path, which would shadow --source)."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    result["peak_mb"] = round(result.pop("peak_kb") / 1024, 1)
    result["seconds"] = round(result["seconds"], 2)
    return result


def figures_for(lines: int, folder: Path, source: Path) -> dict[str, Any]:
    """Every measurement for one file length."""
    env = {**os.environ, "PYTHONPATH": str(source), "ENTITLEMENTS_CACHE": str(folder / "cache")}
    env.pop("ENTITLEMENTS_DB", None)
    good = write_file(folder / f"{lines}.jsonl", lines)
    bad = write_file(folder / f"{lines}-bad.jsonl", lines, bad_last=True)
    cli = [sys.executable, "-m", "entitlements.cli"]
    runs = {
        "floor_python_pass": [sys.executable, "-c", "pass"],
        "floor_read_lines": [sys.executable, "-c", READ_LINES, str(good)],
        "floor_import_cli": [sys.executable, "-c", "import entitlements.cli"],
        "validate_refused_at_last_line": [*cli, "--db", str(folder / "v.db"), "apply", str(bad)],
        "apply": [*cli, "--db", str(folder / f"{lines}.db"), "apply", str(good)],
        # what any writer of the store apply built holds, whatever its file: one more line
        "floor_writer_one_more_line": [
            *cli,
            "--db",
            str(folder / f"{lines}.db"),
            "apply",
            str(write_file(folder / "1.jsonl", 1, name="one-more")),
        ],
    }
    out: dict[str, Any] = {"lines": lines, "file_mb": round(good.stat().st_size / 2**20, 1)}
    for name, argv in runs.items():
        out[name] = measure(argv, env, folder)
        print(
            f"{lines:>9,} lines  {name:<30} {out[name]['peak_mb']:>8.1f} MB  "
            f"{out[name]['seconds']:>8.2f} s  exit {out[name]['code']}",
            flush=True,
        )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lines", type=int, action="append", help="file length (repeatable)")
    parser.add_argument("--source", type=Path, default=ROOT, help="the code to run")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    figures: dict[str, Any] = {"source": str(args.source), "runs": []}
    for lines in args.lines or [100_000]:
        with tempfile.TemporaryDirectory(prefix="apply-memory-") as folder:
            figures["runs"].append(figures_for(lines, Path(folder), args.source.resolve()))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return figures


if __name__ == "__main__":
    main()
