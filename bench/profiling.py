"""`make profile` (`run.py --profile`): py-spy records two of our workers while wrk drives each
route, then profile_summary.py groups the samples by layer. run.py seeds and starts the servers."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Protocol

from profile_summary import summarise_file  # bench/, beside this file
from report import log


class Bench(Protocol):
    """What recording needs of run.py's Bench (named here, so that this file does not import run.py,
    which imports it)."""

    args: Any  # profile_routes, profile_seconds
    procs: Any  # processes.Processes

    def ours_workers(self) -> list[int]: ...

    def drive(self, side: str, route: str, duration: float) -> dict: ...


BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
OUT = BENCH_DIR / "results" / "profile"
# Same load on both workers: worker 0 sampled with idle threads (wall clock: where a request waits),
# worker 1 only while a thread holds the GIL (where Python CPU goes).
OPTIONS = {"wall": ["--idle", "--rate", "50"], "gil": ["--gil", "--rate", "100"]}


def record(bench: Bench, venv_bin: Path) -> dict:
    """Profile each of `--profile-routes` for `--profile-seconds`; the summaries by route and kind."""
    py_spy = find_py_spy(venv_bin)
    OUT.mkdir(parents=True, exist_ok=True)
    workers = bench.ours_workers()
    seconds = bench.args.profile_seconds
    report = {}
    for route in bench.args.profile_routes.split(","):
        files = {kind: OUT / f"{route}-{kind}.txt" for kind in OPTIONS}
        spies = []
        for (kind, path), pid in zip(files.items(), workers):
            path.unlink(missing_ok=True)
            spies.append(bench.procs.start(  # non-blocking sampling: the workers are not paused
                f"py-spy {route} {kind}",
                [py_spy, "record", "--pid", str(pid), "--duration", str(seconds), "--nonblocking", *OPTIONS[kind],
                 "--format", "raw", "-o", str(path)],
                env=dict(os.environ), cwd=REPO, log_path=OUT / f"{route}-{kind}.log"))
        result = bench.drive("ours", route, seconds + 2)
        for spy in spies:
            try:
                spy.wait(60)
            except subprocess.TimeoutExpired:
                pass
            bench.procs.stop(spy)
        log(f"profile {route}: {result['rps']:.0f} rps under py-spy (sampling slows it), p99 {result['p99_ms']:.1f} ms")
        report[route] = summarise_route(route, files)
    log(f"profiles (collapsed stacks; open in https://www.speedscope.app or flamegraph.pl): {OUT}")
    return report


def find_py_spy(venv_bin: Path) -> str:
    py_spy = shutil.which("py-spy") or str(venv_bin / "py-spy")
    if not Path(py_spy).exists():
        raise SystemExit("py-spy is missing: .venv/bin/pip install -r requirements-dev.txt")
    return py_spy


def summarise_route(route: str, files: dict[str, Path]) -> dict:
    summaries = {}
    for kind, path in files.items():
        if path.exists():
            text, data = summarise_file(path, kind)
            (OUT / f"{route}-{kind}-summary.txt").write_text(text)
            log(f"\n=== {route}: {kind} ===\n{text}")
            summaries[kind] = data
    return summaries
