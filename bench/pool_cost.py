"""CPU per checkout and return of a PostgreSQL connection: the service's pool (pools.PostgresPool:
psycopg_pool with the slots and the socket check in front) against a plain stack of connections
(a semaphore and a list, as our own pool was before issue #10) with the same socket check. Each
of `--concurrency` tasks takes a connection, yields once to the loop (as a request awaits its
statement) and gives it back, `--cycles` times in all. No statement runs: only the pool is measured.

    .venv/bin/python bench/pool_cost.py                 # against the database `make bench` seeds
    .venv/bin/python bench/pool_cost.py --concurrency 32 --cycles 40000
"""
import argparse
import asyncio
import secrets
import sys
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config import Settings  # noqa: E402
from drivers import PostgresDriver  # noqa: E402
from pools import PostgresPool  # noqa: E402


class StackPool:
    """The least a pool can do: `size` slots, idle connections reused last-in first-out, a
    connection the server closed replaced (the same socket poll as the service's pool)."""

    def __init__(self, driver: PostgresDriver, size: int):
        self.driver = driver
        self.slots = asyncio.Semaphore(size)
        self.idle: list = []

    async def acquire(self):
        await self.slots.acquire()
        while self.idle:
            raw = self.idle.pop()
            if not self.driver.server_closed(raw):
                return raw
            await self.driver.close(raw)
        return await self.driver.connect(5)

    async def release(self, raw, *, broken: bool) -> None:
        self.idle.append(raw)
        self.slots.release()

    async def close(self) -> None:
        for raw in self.idle:
            await self.driver.close(raw)


async def cycle(pool, cycles: int, concurrency: int) -> float:
    """CPU µs per acquire + release."""
    remaining = iter(range(cycles))

    async def worker() -> None:
        for _ in remaining:
            raw = await pool.acquire()
            await asyncio.sleep(0)
            await pool.release(raw, broken=False)

    await asyncio.gather(*(worker() for _ in range(concurrency)))  # warm-up: every connection opened
    remaining = iter(range(cycles))
    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return 1e6 * (time.process_time() - started) / cycles


async def measure(args: argparse.Namespace) -> None:
    settings = Settings(_env_file=None, database_url=args.database_url, better_auth_secret=secrets.token_urlsafe(32))
    driver = PostgresDriver(settings)
    for round_ in range(args.rounds):
        service = PostgresPool(driver, settings.db_pool_size, 5.0, settings.db_pool_max_lifetime_seconds)
        await service.open()
        ours = await cycle(service, args.cycles, args.concurrency)
        await service.close()
        stack = StackPool(driver, settings.db_pool_size)
        plain = await cycle(stack, args.cycles, args.concurrency)
        await stack.close()
        print(f"round {round_ + 1}: service pool {ours:.1f} us, plain stack {plain:.1f} us per checkout and return "
              f"(pool size {settings.db_pool_size}, {args.concurrency} at a time, {args.cycles} cycles)")


def run_cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/taskapi_bench")
    uvloop.run(measure(parser.parse_args()))


if __name__ == "__main__":
    run_cli()
