#!/usr/bin/env python3
"""cluster_proxy stats-read benchmark: REST through the cluster proxy vs SQL on the leaders.

Brings up a fresh 2-shard Tally cluster (`tallyctl cluster up`) on a free block of loopback ports,
loads N videos (3 minute rows each, spread over a minute, an hour and a day bucket of the range)
through POST /v1/counters:apply, starts a second cluster proxy on base+150 from a copy of the
cluster's config with `cache: {stats_ttl_ms: 0}`, and then drives, interleaved per repeat:

  * rest cache on   wrk (tests/bench/cluster_proxy_stats.lua): GET /v1/videos/v<id>/stats with
                    id ~ Zipf(1.1) over 1..N, through the cluster proxy of `cluster up`
                    (stats_ttl_ms 500: the shard proxies' result cache answers hot ids);
  * rest cache off  the same through the second cluster proxy (stats_ttl_ms 0);
  * sql direct      pgbench, `\\set vid random_zipfian(1, N, 1.1)` and the statement the cluster
                    proxy sends for that request (the UNION ALL over video_stats_minute/hour/day of
                    shard_statements.cpp, same bounds), -M prepared, against both shard leaders at
                    once with the clients split between them (each leader is asked for every id;
                    ids it does not own find no rows, which costs the same index probes).

Throughput is requests (transactions) per second; p50/p99 come from wrk's latency histogram and
pgbench's per-transaction logs. Every figure is the median over the repeats; the ratios are
rest/direct. The machine is small and shared: compare ratios of one run, not absolute numbers.
A second table splits each target's CPU per request between the load generator, the cluster
proxy under test, the shard proxies, PostgreSQL (leaders and replicas with their backends) and
the rest of the machine: on a few shared cores those microseconds decide the ratios.
A target not met is reported, not a failure: exit 0 when the benchmark ran, 1 when the set-up
failed, 2 on bad arguments, 130 when interrupted.

Everything started here is stopped by PID (the second cluster proxy) or by `tallyctl cluster down`,
and the temporary directory is removed unless --keep, also on errors and Ctrl-C. Loopback only.

Usage:
  tests/bench/cluster_proxy_bench.py [--build-dir DIR] [--quick] [--repeats R] [--duration S]
      [--connections C] [--videos N] [--base-port P] [--baseline-proxy BIN] [--markdown PATH]
      [--keep]
Standard library only; needs wrk, pgbench and psql (postgresql-client-15).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import bench_support
from bench_support import SetupError, find_tool, pick_base_port, run_cmd, percentile

from proc_cpu import machine_busy_s, tree_cpu_s

REPO = Path(__file__).resolve().parents[2]
NOCACHE_OFFSET = 150  # the second (cache off) cluster proxy listens at base+150
LUA = REPO / "tests" / "bench" / "cluster_proxy_stats.lua"
ZIPF_S = 1.1
MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
# The range read: 2025-11-21T22:30Z .. 2025-11-23T01:15Z tiles into minute, hour, day, hour and
# minute parts, so all three tables are read.
RANGE_START_MS = 1763764200000
RANGE_END_MS = 1763860500000
ROW_MINUTES_MS = [1763764800000, 1763805900000, 1763860200000]  # 22:40 on 21st, 10:05, 01:10 on 23rd


def log(msg: str) -> None:
    print(f"[cluster_proxy_bench] {msg}", file=sys.stderr, flush=True)


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms // 1000))


def sql_ts(ms: int) -> str:
    t = time.gmtime(ms // 1000)
    return time.strftime("%Y-%m-%d %H:%M:%S", t) + f".{ms % 1000:03d}+00"


def ceil_to(v: int, unit: int) -> int:
    return -((-v) // unit) * unit


def floor_to(v: int, unit: int) -> int:
    return (v // unit) * unit


def tiling(s: int, e: int) -> List[tuple]:
    """cluster_proxy/src/time_range.cpp tile() for the day granularity: five (start, end) parts."""
    hs, he = ceil_to(s, HOUR_MS), floor_to(e, HOUR_MS)
    if hs >= he:
        return [(s, e)] + [(e, e)] * 4
    ds, de = ceil_to(s, DAY_MS), floor_to(e, DAY_MS)
    if ds < de:
        return [(s, hs), (hs, ds), (ds, de), (de, he), (he, e)]
    return [(s, hs), (hs, he), (he, he), (he, he), (he, e)]


def direct_sql() -> str:
    """The statement stats_statement() builds for a total (no granularity), bounds inlined."""
    tables = ["video_stats_minute", "video_stats_hour", "video_stats_day", "video_stats_hour",
              "video_stats_minute"]
    parts = []
    for table, (lo, hi) in zip(tables, tiling(RANGE_START_MS, RANGE_END_MS)):
        parts.append(f"SELECT count, sum FROM {table} WHERE video_id = 'v' || :vid AND "
                     f"event_type = 'view' AND bucket_start >= '{sql_ts(lo)}'::timestamptz AND "
                     f"bucket_start < '{sql_ts(hi)}'::timestamptz")
    return ("SELECT coalesce(sum(b.count), 0)::bigint, coalesce(sum(b.sum), 0)::bigint FROM (" +
            " UNION ALL ".join(parts) + ") AS b;")


@dataclass
class Env:
    tmp: Path
    cluster_dir: Path
    build_dir: Path
    tallyctl: str
    psql: str
    pgbench: str
    wrk: str
    base_port: int = 0
    manifest: dict = field(default_factory=dict)
    cluster_started: bool = False
    extra_procs: List[subprocess.Popen] = field(default_factory=list)

    def processes(self, role: str) -> List[dict]:
        return [p for p in self.manifest.get("processes", []) if p.get("role") == role]

    def pg_env(self) -> Dict[str, str]:
        env = dict(os.environ)
        for k in ("PGSERVICE", "PGSERVICEFILE", "PGOPTIONS", "PGPASSFILE"):
            env.pop(k, None)
        admin = self.manifest["users"]["admin"]
        env.update(PGHOST="127.0.0.1", PGUSER=admin["name"], PGPASSWORD=admin["password"],
                   PGDATABASE=self.manifest.get("database", "tally"), PGSSLMODE="disable",
                   PGCONNECT_TIMEOUT="10", PGAPPNAME="cluster_proxy_bench")
        return env

    def rest_port(self) -> int:
        return self.processes("cluster_proxy")[0]["ports"]["http"]


def psql(env: Env, port: int, sql: str, timeout: float = 120) -> str:
    r = run_cmd([env.psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-p", str(port),
                 "-c", sql], timeout, env.pg_env(), "psql")
    if r.returncode != 0:
        raise SetupError(f"psql on port {port} failed: {r.stderr.strip()}")
    return r.stdout.strip()


def http(port: int, method: str, target: str, body: Optional[dict] = None,
         token: Optional[str] = None, timeout: float = 60) -> tuple:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{target}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def cluster_up(env: Env, args) -> None:
    env.base_port = pick_base_port(args.base_port)
    log(f"cluster up in {env.cluster_dir} (2 shards, base port {env.base_port})")
    env.cluster_started = True
    r = run_cmd([env.tallyctl, "cluster", "up", "--dir", str(env.cluster_dir), "--shards", "2",
                 "--base-port", str(env.base_port)], 600, what="tallyctl cluster up")
    if r.returncode != 0:
        raise SetupError(f"tallyctl cluster up failed (exit {r.returncode}):\n"
                         f"{r.stdout[-3000:]}{r.stderr[-3000:]}")
    env.manifest = json.loads((env.cluster_dir / "cluster.json").read_text())


def load_data(env: Env, videos: int) -> None:
    token = env.manifest["users"]["rest"]["password"]
    log(f"loading {videos} videos ({len(ROW_MINUTES_MS)} minute rows each) via counters:apply")
    batch = 1000
    offset = -1
    for first in range(1, videos + 1, batch):
        rows = []
        for i in range(first, min(videos, first + batch - 1) + 1):
            for k, minute in enumerate(ROW_MINUTES_MS):
                rows.append({"video_id": f"v{i}", "event_type": "view", "minute": minute,
                             "count": 1 + (i + k) % 7, "sum": (i * 13 + k) % 1000})
        body = {"processor_id": "bench", "partition": 0, "from_offset": offset,
                "to_offset": offset + len(rows), "rows": rows}
        status, text = http(env.rest_port(), "POST", "/v1/counters:apply", body, token, 300)
        if status != 200:
            raise SetupError(f"counters:apply answered {status}: {text[:500]}")
        for s in json.loads(text)["shards"]:
            if s["outcome"] != "applied":
                raise SetupError(f"counters:apply: shard {s['shard']} {s['outcome']}: {text[:500]}")
        offset += len(rows)
    # Analyze on the leaders and wait for the replicas (reads may be served there).
    for leader in env.processes("pg_leader"):
        psql(env, leader["ports"]["pg"],
             "VACUUM ANALYZE video_stats_minute, video_stats_hour, video_stats_day", 300)
        lsn = psql(env, leader["ports"]["pg"], "SELECT pg_current_wal_lsn()")
        for rep in env.processes("pg_replica"):
            if rep.get("shard") != leader.get("shard"):
                continue
            deadline = time.monotonic() + 120
            while psql(env, rep["ports"]["pg"],
                       f"SELECT coalesce(pg_last_wal_replay_lsn() >= '{lsn}', false)") != "t":
                if time.monotonic() > deadline:
                    raise SetupError(f"replica {rep['name']} did not replay to {lsn} in 120 s")
                time.sleep(0.2)
    # A spot check: the REST total of v1 equals its rows.
    want = sum(1 + (1 + k) % 7 for k in range(len(ROW_MINUTES_MS)))
    status, text = http(env.rest_port(), "GET", f"/v1/videos/v1/stats?event_type=view&start="
                        f"{iso(RANGE_START_MS)}&end={iso(RANGE_END_MS)}")
    if status != 200 or json.loads(text).get("count") != want:
        raise SetupError(f"stats of v1: {status} {text[:300]} (expected count {want})")
    log(f"loaded; v1 reads back count {want}")


def start_nocache_proxy(env: Env) -> int:
    return start_extra_proxy(env, env.build_dir / "bin" / "cluster_proxy", NOCACHE_OFFSET, 0,
                             "nocache")


def start_extra_proxy(env: Env, binary: Path, offset: int, ttl_ms: int, tag: str) -> int:
    """Another cluster proxy from `binary` on base+offset, a copy of the cluster's config with
    stats_ttl_ms = ttl_ms; stopped by PID in the cleanup."""
    cp = env.processes("cluster_proxy")[0]
    text = Path(cp["config"]).read_text()
    port = env.base_port + offset
    old_port = f"http_port: {cp['ports']['http']}"
    if old_port not in text or "stats_ttl_ms: 500" not in text:
        raise SetupError(f"unexpected cluster proxy config {cp['config']}")
    # The analyst SQL endpoint must move too, or the copy cannot bind it.
    old_pg = f"pg_port: {cp['ports']['pg']}"
    if old_pg not in text:
        raise SetupError(f"unexpected cluster proxy config {cp['config']} (no {old_pg})")
    text = (text.replace(old_port, f"http_port: {port}")
            .replace(old_pg, f"pg_port: {port + 20}")  # base+170..
            .replace("stats_ttl_ms: 500", f"stats_ttl_ms: {ttl_ms}")
            .replace("id: cluster-proxy", f"id: cluster-proxy-{tag}"))
    cfg = env.tmp / f"cluster_proxy_{tag}.yaml"
    cfg.write_text(text)
    cfg.chmod(0o600)
    logf = open(env.tmp / f"cluster_proxy_{tag}.log", "w")
    proc = subprocess.Popen([str(binary), "--config", str(cfg)], stdout=logf,
                            stderr=subprocess.STDOUT, start_new_session=True)
    env.extra_procs.append(proc)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SetupError(f"the {tag} cluster proxy exited: "
                             f"{(env.tmp / f'cluster_proxy_{tag}.log').read_text()[-2000:]}")
        if http(port, "GET", "/healthz", timeout=2)[0] == 200:
            log(f"{tag} cluster proxy ({binary}, stats_ttl_ms {ttl_ms}) on port {port} "
                f"(pid {proc.pid})")
            return port
        time.sleep(0.2)
    raise SetupError(f"the {tag} cluster proxy did not answer /healthz within 30 s")


def stop_extra_proxies(env: Env) -> None:
    for p in env.extra_procs:
        if p.poll() is not None:
            continue
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


def cluster_down(env: Env) -> None:
    if env.cluster_started:
        bench_support.cluster_down(env.tallyctl, env.cluster_dir, log)


# ---------------------------------------------------------------------------------------------
# load generators


@dataclass
class RunResult:
    tps: Optional[float] = None
    p50_ms: Optional[float] = None
    p99_ms: Optional[float] = None
    error: Optional[str] = None
    requests: Optional[int] = None
    cpu_us: Dict[str, float] = field(default_factory=dict)  # CPU per request, by participant


# ---------------------------------------------------------------------------------------------
# CPU per request: on 2 shared cores every participant's CPU is taken from the others, so the
# ratio to direct is set by how many microseconds each one spends per request.

CPU_PARTS = ["load generator", "cluster proxy", "shard proxies", "postgres", "rest of machine"]


def cpu_snapshot(env: "Env", proxy_pid: Optional[int]) -> Dict[str, float]:
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk / pgbench once waited for
    pg = [p["pid"] for p in env.processes("pg_leader") + env.processes("pg_replica")]
    return {
        "load generator": kids.ru_utime + kids.ru_stime,
        "cluster proxy": tree_cpu_s([proxy_pid]) if proxy_pid else 0.0,
        "shard proxies": tree_cpu_s([p["pid"] for p in env.processes("shard_proxy")]),
        "postgres": tree_cpu_s(pg),
        "machine": machine_busy_s(),
    }


def with_cpu(env: "Env", proxy_pid: Optional[int], run) -> RunResult:
    before = cpu_snapshot(env, proxy_pid)
    r = run()
    after = cpu_snapshot(env, proxy_pid)
    if r.requests:
        d = {k: (after[k] - before[k]) * 1e6 / r.requests for k in before}
        d["rest of machine"] = d.pop("machine") - sum(d.values())
        r.cpu_us = d
    return r


def wrk_run(env: Env, port: int, videos: int, connections: int, seconds: int) -> RunResult:
    e = dict(os.environ, VIDEOS=str(videos), ZIPF_S=str(ZIPF_S), START=iso(RANGE_START_MS),
             END=iso(RANGE_END_MS))
    cmd = [env.wrk, "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(LUA),
           f"http://127.0.0.1:{port}"]
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=seconds + 60, env=e)
    except subprocess.TimeoutExpired:
        return RunResult(error=f"wrk did not finish within {seconds + 60} s")
    line = next((l for l in r.stdout.splitlines() if l.startswith("RESULT ")), None)
    if r.returncode != 0 or line is None:
        return RunResult(error=(r.stderr or r.stdout).strip()[:300] or "wrk printed no result")
    d = json.loads(line[len("RESULT "):])
    res = RunResult(tps=d["requests"] / (d["duration_us"] / 1e6), p50_ms=d["p50_us"] / 1000.0,
                    p99_ms=d["p99_us"] / 1000.0, requests=int(d["requests"]))
    errors = sum(d[k] for k in ("connect", "read", "write", "status", "timeout"))
    if errors:
        res.error = f"{errors} errors (non-2xx {d['status']}, timeouts {d['timeout']})"
    return res


def pgbench_direct(env: Env, script: Path, connections: int, seconds: int, tag: str) -> RunResult:
    """pgbench on every leader at once, `connections` split between them; tps summed."""
    leaders = env.processes("pg_leader")
    per = [connections // len(leaders) + (1 if i < connections % len(leaders) else 0)
           for i in range(len(leaders))]
    procs = []
    logdirs = []
    for leader, clients in zip(leaders, per):
        logdir = env.tmp / "pgbench-logs" / f"{tag}-{leader['name']}"
        logdir.mkdir(parents=True, exist_ok=True)
        logdirs.append(logdir)
        cmd = [env.pgbench, "-n", "--no-vacuum", "-T", str(seconds), "-c", str(clients),
               "-j", "1", "-M", "prepared", "-f", str(script), "-p", str(leader["ports"]["pg"]),
               "--log", f"--log-prefix={logdir / 'tx'}"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env.pg_env(), cwd=logdir))
    res = RunResult(tps=0.0, requests=0)
    for p in procs:
        try:
            out, err = p.communicate(timeout=seconds + 120)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            res.error = "pgbench did not finish in time"
            continue
        tps = None
        failed = 0
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("tps =") and tps is None:
                tps = float(line.split("=")[1].split()[0])
            elif line.startswith("number of transactions actually processed:"):
                res.requests += int(line.split(":")[1].split("/")[0])
            elif line.startswith("number of failed transactions:"):
                failed = int(line.split(":")[1].split()[0])
        if p.returncode != 0 or tps is None or failed or "aborted" in out + err:
            res.error = (err or out).strip().splitlines()[-1][:300] if (err or out).strip() else \
                "pgbench failed"
        else:
            res.tps += tps
    lat: List[int] = []
    for d in logdirs:
        for f in d.iterdir():
            with open(f) as fh:
                for line in fh:
                    parts = line.split()
                    if len(parts) >= 3 and parts[2].isdigit():
                        lat.append(int(parts[2]))
        shutil.rmtree(d, ignore_errors=True)
    if lat:
        lat.sort()
        res.p50_ms = percentile(lat, 0.50) / 1000.0
        res.p99_ms = percentile(lat, 0.99) / 1000.0
    return res


def med(runs: List[RunResult], attr: str) -> Optional[float]:
    vals = [getattr(r, attr) for r in runs if r.error is None and getattr(r, attr) is not None]
    return statistics.median(vals) if vals else None


def fmt(v: Optional[float], spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def build_report(args, env: Env, results: Dict[str, List[RunResult]], markdown: bool) -> str:
    direct_tps = med(results["sql direct"], "tps")
    rows = []
    for name, runs in results.items():
        tps = med(runs, "tps")
        ratio = (tps / direct_tps) if tps and direct_tps else None
        bad = [r.error for r in runs if r.error]
        rows.append([name, fmt(tps, ".0f"), fmt(med(runs, "p50_ms"), ".2f"),
                     fmt(med(runs, "p99_ms"), ".2f"), fmt(ratio, ".2f") + "x",
                     f"{len(runs) - len(bad)}/{len(runs)}" + (f" ({bad[0]})" if bad else "")])
    headers = ["target", "req/s", "p50 ms", "p99 ms", "vs direct", "ok runs"]
    out = [f"cluster_proxy bench: 2 shards, {args.videos} videos, Zipf s={ZIPF_S}, "
           f"{args.connections} connections, {args.duration} s x {args.repeats} repeats "
           f"(medians), range {iso(RANGE_START_MS)}..{iso(RANGE_END_MS)}"]
    out += table(headers, rows, markdown)
    cpu_rows = []
    for name, runs in results.items():
        ok = [r for r in runs if r.error is None and r.cpu_us]
        if not ok:
            continue
        parts = [statistics.median(r.cpu_us[k] for r in ok) for k in CPU_PARTS]
        cpu_rows.append([name] + [f"{v:.1f}" for v in parts] + [f"{sum(parts):.1f}"])
    if cpu_rows:
        out.append("")
        out.append(f"CPU per request, microseconds (medians; {os.cpu_count()} CPUs; from /proc: "
                   "each process with its threads and children, the load generator from "
                   "rusage, the rest of the machine from /proc/stat)")
        out += table(["target"] + CPU_PARTS + ["total"], cpu_rows, markdown)
    return "\n".join(out)


def table(headers: List[str], rows: List[List[str]], markdown: bool) -> List[str]:
    if markdown:
        return ["", "| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"] + \
            ["| " + " | ".join(r) + " |" for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    return ["  ".join(h.ljust(w) for h, w in zip(headers, widths))] + \
        ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]


def parse_args(argv: List[str]):
    ap = argparse.ArgumentParser(
        description="Benchmark GET stats through the cluster proxy (wrk) against the same SQL on "
                    "the shard leaders (pgbench), cache on and off.")
    ap.add_argument("--build-dir", default=str(REPO / "build"))
    ap.add_argument("--quick", action="store_true", help="1 repeat of 5 s, 2000 videos")
    ap.add_argument("--repeats", type=int, help="runs per target (default 3)")
    ap.add_argument("--duration", type=int, help="seconds per run (default 10)")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--videos", type=int, help="videos loaded (default 10000)")
    ap.add_argument("--base-port", type=int)
    ap.add_argument("--baseline-proxy", help="another cluster_proxy binary to run side by side "
                    "(cache on and off), e.g. a build before a change")
    ap.add_argument("--markdown", help="also write the table as Markdown to this file")
    ap.add_argument("--keep", action="store_true", help="keep the cluster and temp dir")
    args = ap.parse_args(argv)
    quick = {"repeats": 1, "duration": 5, "videos": 2000}
    full = {"repeats": 3, "duration": 10, "videos": 10000}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("repeats", "duration", "connections", "videos"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.connections < 2:
        ap.error("--connections must be >= 2 (split across the two leaders)")
    return args


def main(argv: List[str]) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as e:
        return 2 if e.code else 0

    def on_signal(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    tmp = Path(tempfile.mkdtemp(prefix="tally-cpbench-"))
    os.chmod(tmp, 0o755)
    env = None
    code = 0
    try:
        build = Path(args.build_dir)
        env = Env(tmp=tmp, cluster_dir=tmp / "cluster", build_dir=build,
                  tallyctl=str(build / "bin" / "tallyctl"),
                  psql=find_tool("psql", "/usr/lib/postgresql/15/bin/psql"),
                  pgbench=find_tool("pgbench", "/usr/lib/postgresql/15/bin/pgbench"),
                  wrk=find_tool("wrk"))
        if not os.access(env.tallyctl, os.X_OK):
            raise SetupError(f"{env.tallyctl} not built")
        cluster_up(env, args)
        load_data(env, args.videos)
        nocache_port = start_nocache_proxy(env)
        script = tmp / "direct.sql"
        script.write_text(f"\\set vid random_zipfian(1, {args.videos}, {ZIPF_S})\n{direct_sql()}\n")
        proxy_pid = {"rest cache on": env.processes("cluster_proxy")[0]["pid"],
                     "rest cache off": env.extra_procs[-1].pid, "sql direct": None}
        targets = {
            "rest cache on": lambda s, t: wrk_run(env, env.rest_port(), args.videos,
                                                  args.connections, s),
            "rest cache off": lambda s, t: wrk_run(env, nocache_port, args.videos,
                                                   args.connections, s),
            "sql direct": lambda s, t: pgbench_direct(env, script, args.connections, s, t),
        }
        for name, fn in targets.items():  # warm-up: connections, plans, caches
            r = fn(2, f"warmup-{name.replace(' ', '-')}")
            if r.error and r.tps is None:
                raise SetupError(f"warm-up of {name} failed: {r.error}")
        if args.baseline_proxy:  # the same reads through another cluster_proxy binary
            for ttl, offset in ((500, NOCACHE_OFFSET + 1), (0, NOCACHE_OFFSET + 2)):
                port = start_extra_proxy(env, Path(args.baseline_proxy), offset, ttl,
                                         f"baseline-{ttl}")
                name = f"baseline cache {'on' if ttl else 'off'}"
                proxy_pid[name] = env.extra_procs[-1].pid
                targets[name] = (lambda p: lambda s, t: wrk_run(env, p, args.videos,
                                                                args.connections, s))(port)
        results: Dict[str, List[RunResult]] = {name: [] for name in targets}
        names = list(targets)
        for rep in range(args.repeats):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for name in order:
                r = with_cpu(env, proxy_pid[name],
                             lambda: targets[name](args.duration, f"{name.replace(' ', '-')}-{rep}"))
                log(f"repeat {rep + 1}/{args.repeats} {name}: "
                    f"{fmt(r.tps, '.0f')} req/s, p50 {fmt(r.p50_ms, '.2f')} ms, "
                    f"p99 {fmt(r.p99_ms, '.2f')} ms" + (f", ERROR {r.error}" if r.error else ""))
                results[name].append(r)
        print(build_report(args, env, results, markdown=False))
        if args.markdown:
            Path(args.markdown).write_text(build_report(args, env, results, markdown=True) + "\n")
    except SetupError as e:
        log(f"set-up failed: {e}")
        code = 1
    except KeyboardInterrupt:
        log("interrupted")
        code = 130
    finally:
        if env is not None:
            stop_extra_proxies(env)
            if not args.keep:
                cluster_down(env)
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
