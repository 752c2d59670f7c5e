"""The bench's figures: medians and checks per route, and the table it prints."""
from __future__ import annotations

import os
import statistics

P99_TARGET_MS = 100.0
MEMORY_GROWTH_TARGET = 0.20


def log(message: str) -> None:
    print(message, flush=True)


def summarise(spec: dict, runs: dict) -> dict:
    """One route's runs (ours and the floor, round by round) as medians, ratios and PASS/FAIL."""
    def med(side: str, key: str) -> float | None:
        values = [run[key] for run in runs[side]]
        return statistics.median(values) if values else None

    out = {"label": spec["label"], "target_ratio": spec["target"], "runs": runs}
    for side in ("ours", "floor"):
        if runs[side]:
            out[side] = {
                "rps": round(med(side, "rps"), 1), "p50_ms": round(med(side, "p50_ms"), 2), "p99_ms": round(med(side, "p99_ms"), 2),
                "non2xx": sum(r["non2xx"] for r in runs[side]), "socket_errors": sum(r["socket_errors"] for r in runs[side]),
                "requests": sum(r["requests"] for r in runs[side]),
                "server_cpu_us_per_req": round(med(side, "server_cpu_us_per_req"), 1),
                "postgres_cpu_us_per_req": round(med(side, "postgres_cpu_us_per_req"), 1),
                "cpu_cores": {k: round(statistics.median(r["cpu_cores"][k] for r in runs[side]), 2)
                              for k in ("server", "postgres", "wrk", "other", "machine")},
            }
    if runs["floor"]:
        ratios = [o["rps"] / f["rps"] for o, f in zip(runs["ours"], runs["floor"]) if f["rps"]]
        out["ratio"] = round(statistics.median(ratios), 3)
        out["ratio_per_round"] = [round(x, 3) for x in ratios]
        # What the ratio would be if both were CPU-bound on a quiet machine: CPU per request (server
        # processes + PostgreSQL) of the floor over ours. Unlike rps, other processes barely move it.
        cost = {side: out[side]["server_cpu_us_per_req"] + out[side]["postgres_cpu_us_per_req"] for side in ("ours", "floor")}
        out["cpu_ratio"] = round(cost["floor"] / cost["ours"], 3) if cost["ours"] else None
    ours = out["ours"]
    checks = {"p99": ours["p99_ms"] < P99_TARGET_MS, "no_errors": ours["non2xx"] == 0 and ours["socket_errors"] == 0}
    if spec["target"] is not None and "ratio" in out:
        checks["ratio"] = out["ratio"] >= spec["target"]
    out["checks"] = checks
    out["pass"] = all(checks.values())
    return out


def print_table(routes: dict, memory: dict | None, meta: dict) -> None:
    log("")
    if routes:
        print_routes(routes, meta)
    if memory:
        print_memory(memory)


def print_routes(routes: dict, meta: dict) -> None:
    log(f"ours: {meta['workers']} workers, auth {meta['auth'].upper()}"
        + (" (floor: HS256 always)" if meta["auth"] != "hs256" else "")
        + f" | floor: {meta['floor_workers']} workers | wrk -t{meta['threads']} -c{meta['connections']} "
        f"{meta['duration']}s x {meta['rounds']} rounds, medians")
    header = (f"{'route':<11} {'ours rps':>9} {'floor rps':>9} {'ratio':>6} {'target':>7}  {'ours p50/p99 ms':>16}  "
              f"{'floor p50/p99 ms':>16}  {'non-2xx o/f':>11}  {'CPU us/req o/f':>14} {'cpu ratio':>9}  ok")
    log(header)
    log("-" * len(header))
    for name, r in routes.items():
        o, f = r["ours"], r.get("floor")
        target = f">={r['target_ratio']:.1f}" if r["target_ratio"] is not None else "-"
        errors_o = o["non2xx"] + o["socket_errors"]
        errors_f = (f["non2xx"] + f["socket_errors"]) if f else "-"
        log(f"{name:<11} {o['rps']:>9.0f} {f['rps'] if f else float('nan'):>9.0f} {r.get('ratio', float('nan')):>6.2f} {target:>7}  "
            f"{o['p50_ms']:>7.1f} / {o['p99_ms']:>6.1f}  "
            + (f"{f['p50_ms']:>7.1f} / {f['p99_ms']:>6.1f}" if f else f"{'-':>16}")
            + f"  {str(errors_o) + '/' + str(errors_f):>11}  "
            + f"{str(round(o['server_cpu_us_per_req'])) + '/' + (str(round(f['server_cpu_us_per_req'])) if f else '-'):>14} "
            + f"{r['cpu_ratio'] if r.get('cpu_ratio') is not None else float('nan'):>9.2f}  "
            + ("PASS" if r["pass"] else "FAIL " + ",".join(k for k, v in r["checks"].items() if not v)))
    log("targets: ratio ours/floor >= 0.5 (list, get_one), >= 0.4 (create, update, toggle; floor = its POST); "
        f"p99 < {P99_TARGET_MS:.0f} ms and zero non-2xx on every route (ours).")
    log("CPU us/req: CPU time of the server's processes per request. cpu ratio: floor/ours CPU per request "
        "(server + PostgreSQL), the throughput ratio to expect when both are CPU-bound; it holds on a busy machine.")
    others = [r[side]["cpu_cores"]["other"] for r in routes.values() for side in ("ours", "floor") if r.get(side)]
    if others:
        busiest = max(others)
        log(f"background: other processes used up to {busiest:.2f} of {os.cpu_count()} cores during the runs (median per route)"
            + ("  -> WARNING: the machine was not quiet; absolute numbers are low, ratios noisier" if busiest >= 0.25 else ""))


def print_memory(memory: dict) -> None:
    log("")
    log(f"memory: RSS per worker after the first {memory['requests_first']:,} requests and after {memory['requests_last']:,} "
        f"(all routes; non-2xx/errors in the mixed runs: {memory['non2xx_or_errors_mixed']})"
        + ("" if memory["reached_target"] else f"  -> target of {memory['target_requests']:,} NOT reached in the time budget"))
    for pid, w in memory["workers"].items():
        log(f"  worker {pid}: {w['rss_after_first_kib'] / 1024:7.1f} MiB -> {w['rss_after_last_kib'] / 1024:7.1f} MiB  "
            f"({w['growth'] * 100:+.1f}%, target <= +{MEMORY_GROWTH_TARGET * 100:.0f}%)  [at start {w['rss_start_kib'] / 1024:.1f} MiB]")
    if memory["reached_target"]:
        log(f"  memory: {'PASS' if memory['pass'] else 'FAIL'}")
    else:
        within = all(w["growth"] <= MEMORY_GROWTH_TARGET for w in memory["workers"].values())
        log(f"  memory: INCOMPLETE ({memory['requests_last']:,} of {memory['target_requests']:,} requests in the time budget; "
            f"growth so far {'within' if within else 'OVER'} target). Full check: .venv/bin/python bench/run.py --memory-only --budget 600")
