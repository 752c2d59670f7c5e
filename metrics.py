"""Prometheus metrics for `GET /metrics`, counted across every worker process of this instance.

prometheus_client's multiprocess mode: each worker writes its values to memory-mapped files in
one directory, and a scrape (served by any worker) adds up the files of all of them. The
directory must be known before prometheus_client is imported, so this module picks it first:

- PROMETHEUS_MULTIPROC_DIR, when the operator set it (as gunicorn setups do), used as given;
- else one directory per instance, named after the process that started the workers (uvicorn
  `--workers N` spawns them from one master) and its start time: the workers of one instance
  share it, two instances never do, and a new instance (even with a reused pid) starts empty.
  Directories of instances that are gone are removed.
"""
import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("task_api.metrics")

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# Records the directory this module chose, so that a process started with our environment (a
# test's subprocess, a second instance) knows the variable is not the operator's and picks its own.
CHOSEN_VARIABLE = "TASK_API_METRICS_DIR_CHOSEN"
INSTANCE_DIRECTORIES = Path(tempfile.gettempdir()) / "task-api-metrics"


def _process_start_time(pid: int) -> str:
    """Clock ticks since boot when `pid` started (Linux), so a reused pid is a new name; "" elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat[stat.rindex(")") + 2:].split()[19]


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _is_alive(pid: int, start_time: str) -> bool:
    return _pid_exists(pid) and _process_start_time(pid) == start_time


def _remove_directories_of_gone_instances(keep: Path) -> None:
    for directory in INSTANCE_DIRECTORIES.glob("*-*"):
        pid, _, start_time = directory.name.partition("-")
        if directory != keep and pid.isdigit() and not _is_alive(int(pid), start_time):
            shutil.rmtree(directory, ignore_errors=True)


def _choose_directory() -> str | None:
    given = os.environ.get(MULTIPROC_VARIABLE)
    if given and given != os.environ.get(CHOSEN_VARIABLE):
        os.makedirs(given, exist_ok=True)
        return given
    master = multiprocessing.parent_process()  # uvicorn's workers are its multiprocessing children
    instance_pid = master.pid if master is not None and master.pid is not None else os.getpid()
    directory = INSTANCE_DIRECTORIES / f"{instance_pid}-{_process_start_time(instance_pid)}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # no writable temporary directory: each process counts on its own
        os.environ.pop(MULTIPROC_VARIABLE, None)
        log.warning("metrics count per worker process: %s is not writable (%s); set PROMETHEUS_MULTIPROC_DIR", directory, error)
        return None
    _remove_directories_of_gone_instances(keep=directory)
    os.environ[MULTIPROC_VARIABLE] = os.environ[CHOSEN_VARIABLE] = str(directory)
    return str(directory)


METRICS_DIRECTORY = _choose_directory()

# Imported only now: prometheus_client reads the directory when it is imported.
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram  # noqa: E402
from prometheus_client import generate_latest, multiprocess  # noqa: E402

import webhooks  # noqa: E402
from db import DatabaseUnavailable  # noqa: E402

METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
POOL_SAMPLE_SECONDS = 1.0

REQUESTS = Counter(
    "task_api_http_requests", "HTTP requests answered, by method, route template and status.", ["method", "route", "status"]
)
LATENCY = Histogram(
    "task_api_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
RATE_LIMITED = Counter("task_api_rate_limited_requests", "Requests refused with 429 by the rate limit.")
SEARCH_COUNTS = Counter(
    "task_api_search_counts",
    "Counts of a big user's searches: remembered (their lists unchanged since) or counted.",
    ["outcome"],
)
# Gauges of live worker processes, added up ("livesum": a worker that exits drops out).
POOL_IN_USE = Gauge(
    "task_api_db_pool_connections_in_use", "Database connections handed out to requests.", multiprocess_mode="livesum"
)
POOL_WAITING = Gauge(
    "task_api_db_pool_requests_waiting", "Requests waiting for a database connection.", multiprocess_mode="livesum"
)
POOL_OPEN = Gauge("task_api_db_pool_connections_open", "Open database connections.", multiprocess_mode="livesum")
POOL_MAX = Gauge(
    "task_api_db_pool_connections_max", "The most database connections the pools may open.", multiprocess_mode="livesum"
)
POOL_DISCARDED = Gauge(
    "task_api_db_pool_connections_discarded",
    "Database connections closed instead of reused (broken, timed out, cut mid-statement) since the workers started.",
    multiprocess_mode="livesum",
)
# Read from the database at a scrape: the same in every worker, so the latest value is the instance's.
EVENTS_PENDING = Gauge(
    "task_api_events_pending_delivery",
    "Events recorded but not yet acknowledged by EVENTS_WEBHOOK_URL (0 when it is not set).",
    multiprocess_mode="mostrecent",
)

_request_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def record_request(method: str, route: str, status: int, seconds: float) -> None:
    """Called once per request by the access middleware. `route` is a template, never a raw path."""
    key = (method, route, status)
    series = _request_series.get(key)
    if series is None:
        label = method if method in METHODS else "OTHER"  # a client cannot invent label values
        series = (REQUESTS.labels(label, route, str(status)), LATENCY.labels(label, route))
        if method in METHODS:
            _request_series[key] = series
    series[0].inc()
    series[1].observe(seconds)


def record_rate_limited() -> None:
    RATE_LIMITED.inc()


def record_search_count(remembered: bool) -> None:
    SEARCH_COUNTS.labels("remembered" if remembered else "counted").inc()


def sample_pool(database: Any) -> None:
    pool = database.pool
    POOL_IN_USE.set(pool.in_use)
    POOL_WAITING.set(pool.waiting)
    POOL_OPEN.set(pool.open_connections())
    POOL_MAX.set(pool.max_size)
    POOL_DISCARDED.set(pool.discarded)


async def sample_pool_forever(database: Any) -> None:
    """This worker's pool, written every second (no per-request cost); the lifespan runs it."""
    while True:
        with contextlib.suppress(Exception):
            sample_pool(database)
        await asyncio.sleep(POOL_SAMPLE_SECONDS)


async def refresh_at_scrape(app: Any) -> None:
    """Gauges read when /metrics is scraped, in the worker that serves the scrape.

    The place for values that belong to the instance (or the database) rather than to one worker.
    With the database down the events gauge keeps its last value (the scrape still answers)."""
    sample_pool(app.state.database)
    if app.state.settings.events_webhook_url:
        with contextlib.suppress(DatabaseUnavailable):
            EVENTS_PENDING.set(await webhooks.pending_count(app.state.database))


def exposition() -> tuple[bytes, str]:
    """The text Prometheus scrapes: every worker's files, added up. Gauges of workers that died
    without saying so (SIGKILL) are dropped first; their counters stay (the instance's totals)."""
    if METRICS_DIRECTORY is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    _forget_dead_workers()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=METRICS_DIRECTORY)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def _forget_dead_workers() -> None:
    for path in Path(str(METRICS_DIRECTORY)).glob("gauge_live*_*.db"):
        pid = path.stem.rpartition("_")[2]
        if pid.isdigit() and not _pid_exists(int(pid)):
            multiprocess.mark_process_dead(int(pid), METRICS_DIRECTORY)



def worker_stopped() -> None:
    """The lifespan's end: this worker's pool holds nothing any more (its files go once it is gone)."""
    for gauge in (POOL_IN_USE, POOL_WAITING, POOL_OPEN, POOL_MAX):
        gauge.set(0)
