#!/bin/sh
# Profile our service under load with py-spy, the same setup as the bench (seeded PostgreSQL,
# canonical start, 2 workers), while wrk drives GET /api/tasks and then GET /api/tasks/{id}.
#
#   bench/profile.sh                      # 10 s per route; summaries printed, files in bench/results/profile/
#   bench/profile.sh --profile-seconds 20 --auth eddsa
#
# Per route it records worker 0 with --idle (wall clock: where a request waits: DB round trips,
# GIL, pool) and worker 1 with --gil (where Python CPU goes), as collapsed stacks
# (bench/results/profile/<route>-{wall,gil}.txt: open them in https://www.speedscope.app, or feed
# flamegraph.pl), and prints a summary grouped by layer (auth, FastAPI routing/dependencies,
# SQLAlchemy, psycopg2 calls, pool pre-ping, JSON, threadpool, middleware, logging).
# Re-summarise a file:  .venv/bin/python bench/profile_summary.py bench/results/profile/list-gil.txt
#
# By hand, against any running server: find a worker (the uvicorn master's child) and record
#   pgrep -P "$(pgrep -of 'uvicorn main:app')"            # worker pids
#   .venv/bin/py-spy record -o /tmp/profile.svg --pid <worker pid> --duration 10 --nonblocking
#   .venv/bin/py-spy top --pid <worker pid>                # live view
#   .venv/bin/py-spy dump --pid <worker pid>               # every thread's stack, once
# py-spy needs ptrace rights (root, or CAP_SYS_PTRACE in a container).
set -eu
cd "$(dirname "$0")/.."
[ -x .venv/bin/py-spy ] || .venv/bin/pip install --quiet py-spy
exec .venv/bin/python bench/run.py --profile "$@"
