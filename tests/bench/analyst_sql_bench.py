#!/usr/bin/env python3
"""Issue 7's benchmark: analyst reports through the cluster proxy's PostgreSQL endpoint against
the same SQL on one PostgreSQL holding all the data, in one run.

Starts two local clusters with tallyctl: a 2-shard one (queried through the cluster proxy's
analyst endpoint, as tally_analyst) and a 1-shard one whose leader plays "one PostgreSQL holding
all the data" (queried directly, as the same tally_analyst role). Both are loaded through the
normal write path (PUT /v1/channels, PUT /v1/videos, POST /v1/counters:apply) with the same data.
Then, interleaved per repeat, pgbench -M simple runs each report against both targets:

  * top10      top 10 videos by views in the last hour, joined to video and channel names
               (cross-shard: per-shard top 10 pushed down, merged at the proxy);
  * one-video  a single video's hourly views with its title and channel (pinned to one shard).

It prints tps, p50/p99 latency (pgbench's per-transaction logs) and the proxy/single ratios, and
checks first that both targets return the same rows for each report.

Usage: tests/bench/analyst_sql_bench.py [--build-dir build] [--videos 2000] [--clients 4]
                                        [--repeats 3] [--duration 8] [--markdown PATH] [--keep]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

sys.dont_write_bytecode = True  # no __pycache__ in the source tree from the imports below
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_support import (SetupError, find_tool, percentile, pick_base_port,  # noqa: E402
                           run_cmd)
from cluster_proxy_bench import http  # noqa: E402

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
# "The last hour" is fixed so that both targets see exactly the same rows: [T - 1h, T).
T_MS = 1763856000000  # 2025-11-23T00:00:00Z
CHANNELS = 50


def log(msg: str) -> None:
    print(f"[analyst_sql_bench] {msg}", file=sys.stderr, flush=True)


def sql_ts(ms: int) -> str:
    t = time.gmtime(ms // 1000)
    return time.strftime("%Y-%m-%d %H:%M:%S+00", t)


TOP10_SQL = (
    "SELECT s.video_id, v.title, c.name, sum(s.count) AS views "
    "FROM video_stats_minute s JOIN videos v ON v.video_id = s.video_id "
    "JOIN channels c ON c.channel_id = v.channel_id "
    f"WHERE s.event_type = 'view' AND s.bucket_start >= '{sql_ts(T_MS - HOUR_MS)}' "
    f"AND s.bucket_start < '{sql_ts(T_MS)}' "
    "GROUP BY s.video_id, v.title, c.name ORDER BY views DESC, s.video_id LIMIT 10")


def one_video_sql(video: str) -> str:
    return (
        "SELECT v.title, c.name, s.bucket_start, s.count "
        "FROM video_stats_hour s JOIN videos v ON v.video_id = s.video_id "
        "JOIN channels c ON c.channel_id = v.channel_id "
        f"WHERE s.video_id = '{video}' AND s.event_type = 'view' ORDER BY s.bucket_start")


class Cluster:
    def __init__(self, name: str, directory: Path, shards: int, tallyctl: str):
        self.name, self.dir, self.shards, self.tallyctl = name, directory, shards, tallyctl
        self.manifest: dict = {}
        self.started = False

    def up(self) -> None:
        base = pick_base_port(None)
        log(f"{self.name}: tallyctl cluster up ({self.shards} shard(s), base port {base})")
        self.started = True
        r = run_cmd([self.tallyctl, "cluster", "up", "--dir", str(self.dir), "--shards",
                     str(self.shards), "--base-port", str(base)], 600, what="tallyctl cluster up")
        if r.returncode != 0:
            raise SetupError(f"cluster up failed: {r.stdout[-2000:]}{r.stderr[-2000:]}")
        self.manifest = json.loads((self.dir / "cluster.json").read_text())

    def down(self) -> None:
        if self.started and (self.dir / "cluster.json").exists():
            log(f"{self.name}: tallyctl cluster down")
            subprocess.run([self.tallyctl, "cluster", "down", "--dir", str(self.dir)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=180)

    def proc(self, role: str) -> dict:
        return [p for p in self.manifest["processes"] if p["role"] == role][0]

    def rest_port(self) -> int:
        return self.proc("cluster_proxy")["ports"]["http"]

    def token(self) -> str:
        return self.manifest["users"]["rest"]["password"]

    def analyst_env(self) -> Dict[str, str]:
        env = dict(os.environ)
        for k in ("PGSERVICE", "PGSERVICEFILE", "PGOPTIONS", "PGPASSFILE"):
            env.pop(k, None)
        a = self.manifest["users"]["analyst"]
        env.update(PGHOST="127.0.0.1", PGUSER=a["name"], PGPASSWORD=a["password"],
                   PGDATABASE=self.manifest.get("database", "tally"), PGSSLMODE="disable",
                   PGCONNECT_TIMEOUT="10")
        return env


def load(cluster: Cluster, videos: int) -> None:
    """The same data set into either cluster through its REST API."""
    port, token = cluster.rest_port(), cluster.token()
    for c in range(CHANNELS):
        status, text = http(port, "PUT", f"/v1/channels/c{c}", {"name": f"Channel {c}"}, token)
        if status != 200:
            raise SetupError(f"{cluster.name}: PUT channel c{c}: {status} {text[:300]}")
    for i in range(1, videos + 1):
        status, text = http(port, "PUT", f"/v1/videos/v{i}",
                            {"title": f"Video {i}", "channel_id": f"c{i % CHANNELS}"}, token)
        if status != 200:
            raise SetupError(f"{cluster.name}: PUT video v{i}: {status} {text[:300]}")
    offset = -1
    batch: List[dict] = []

    def send() -> None:
        nonlocal offset, batch
        if not batch:
            return
        body = {"processor_id": "analyst-bench", "partition": 0, "from_offset": offset,
                "to_offset": offset + len(batch), "rows": batch}
        status, text = http(port, "POST", "/v1/counters:apply", body, token, 300)
        if status != 200 or any(s["outcome"] != "applied" for s in json.loads(text)["shards"]):
            raise SetupError(f"{cluster.name}: counters:apply: {status} {text[:500]}")
        offset += len(batch)
        batch = []

    for i in range(1, videos + 1):
        # Six minutes of views per video over the two hours before T, skewed so the top 10 is
        # well defined: video i gets about videos/i views per minute row.
        for k in range(6):
            minute = T_MS - 2 * HOUR_MS + (i * 7 + k * 19) % 120 * MINUTE_MS
            batch.append({"video_id": f"v{i}", "event_type": "view", "minute": minute,
                          "count": max(1, videos // i) + k})
        if len(batch) >= 3000:
            send()
    send()


def rows(cluster_env: Dict[str, str], psql: str, port: int, sql: str) -> List[str]:
    r = run_cmd([psql, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-p", str(port), "-c", sql], 120,
                cluster_env, "psql")
    if r.returncode != 0:
        raise SetupError(f"psql on {port}: {r.stderr.strip()}")
    return r.stdout.strip().splitlines()


class Run:
    def __init__(self) -> None:
        self.tps: Optional[float] = None
        self.p50: Optional[float] = None
        self.p99: Optional[float] = None
        self.error = ""


def pgbench(pgbench_bin: str, env: Dict[str, str], port: int, script: Path, clients: int,
            seconds: int, logdir: Path) -> Run:
    shutil.rmtree(logdir, ignore_errors=True)
    logdir.mkdir(parents=True)
    cmd = [pgbench_bin, "-n", "-T", str(seconds), "-c", str(clients), "-j", str(min(clients, 2)),
           "-M", "simple", "-f", str(script), "-p", str(port), "--log",
           f"--log-prefix={logdir / 'tx'}"]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                       cwd=logdir, timeout=seconds + 120)
    run = Run()
    for line in r.stdout.splitlines():
        if line.strip().startswith("tps =") and run.tps is None:
            run.tps = float(line.split("=")[1].split()[0])
    failed = "number of failed transactions: 0" not in r.stdout and "failed" in r.stdout
    if r.returncode != 0 or run.tps is None or failed:
        run.error = (r.stderr or r.stdout).strip()[-300:]
        return run
    lat = []
    for f in logdir.iterdir():
        for line in f.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[2].isdigit():
                lat.append(int(parts[2]))
    if lat:
        lat.sort()
        run.p50 = percentile(lat, 0.5) / 1000.0
        run.p99 = percentile(lat, 0.99) / 1000.0
    return run


def median(values: List[Optional[float]]) -> Optional[float]:
    vals = sorted(v for v in values if v is not None)
    return vals[len(vals) // 2] if vals else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("--videos", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--markdown")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="tally-sqlbench-"))
    os.chmod(tmp, 0o755)
    build = Path(args.build_dir).resolve()
    tallyctl = str(build / "bin" / "tallyctl")
    psql = find_tool("psql", "/usr/lib/postgresql/15/bin/psql")
    pgbench_bin = find_tool("pgbench", "/usr/lib/postgresql/15/bin/pgbench")
    sharded = Cluster("sharded", tmp / "sharded", 2, tallyctl)
    single = Cluster("single", tmp / "single", 1, tallyctl)
    t0 = time.monotonic()
    load_before = os.getloadavg()[0]
    try:
        sharded.up()
        single.up()
        log(f"loading {args.videos} videos, {CHANNELS} channels and 6 minute rows per video "
            "into both through REST")
        load(sharded, args.videos)
        load(single, args.videos)
        proxy_port = sharded.proc("cluster_proxy")["ports"]["pg"]
        single_port = single.proc("pg_leader")["ports"]["pg"]
        # The single node is read on its leader; give it fresh statistics like a DBA would.
        admin = dict(single.analyst_env(), PGUSER=single.manifest["users"]["admin"]["name"],
                     PGPASSWORD=single.manifest["users"]["admin"]["password"])
        rows(admin, psql, single_port, "ANALYZE")
        for leader in [p for p in sharded.manifest["processes"] if p["role"] == "pg_leader"]:
            sh_admin = dict(sharded.analyst_env(),
                            PGUSER=sharded.manifest["users"]["admin"]["name"],
                            PGPASSWORD=sharded.manifest["users"]["admin"]["password"])
            rows(sh_admin, psql, leader["ports"]["pg"], "ANALYZE")
        time.sleep(1)  # replicas replay the ANALYZE
        reports = {"top10": TOP10_SQL, "one-video": one_video_sql("v17")}
        for name, sql in reports.items():
            a = rows(sharded.analyst_env(), psql, proxy_port, sql)
            b = rows(single.analyst_env(), psql, single_port, sql)
            if a != b or not a:
                raise SetupError(f"{name}: the proxy and the single PostgreSQL disagree:\n"
                                 f"proxy:  {a[:5]}\nsingle: {b[:5]}")
            log(f"{name}: both return the same {len(a)} rows")
        scripts = {"top10": tmp / "top10.sql", "one-video": tmp / "one_video.sql"}
        scripts["top10"].write_text(TOP10_SQL + ";\n")
        # pgbench substitutes :id inside the literal, so the WHERE pins one video id.
        scripts["one-video"].write_text(f"\\set id random(1, {args.videos})\n" +
                                        one_video_sql("v:id") + ";\n")
        targets = {"proxy": (sharded.analyst_env(), proxy_port),
                   "single": (single.analyst_env(), single_port)}
        results: Dict[str, Dict[str, List[Run]]] = {r: {t: [] for t in targets} for r in reports}
        for rep in range(args.repeats):
            for report in reports:
                order = list(targets) if rep % 2 == 0 else list(reversed(targets))
                for target in order:
                    env, port = targets[target]
                    run = pgbench(pgbench_bin, env, port, scripts[report], args.clients,
                                  args.duration, tmp / "logs" / f"{report}-{target}")
                    log(f"repeat {rep + 1}/{args.repeats} {report} {target}: "
                        + (run.error or f"{run.tps:.0f} tps, p50 {run.p50:.2f} ms, "
                           f"p99 {run.p99:.2f} ms"))
                    results[report][target].append(run)
        lines = [f"analyst SQL bench: {args.videos} videos, {CHANNELS} channels, pgbench -M simple, "
                 f"{args.clients} clients, {args.repeats} x {args.duration} s (medians); "
                 f"load average {load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end; "
                 f"{(time.monotonic() - t0) / 60:.1f} min",
                 "",
                 "| report | proxy tps | single tps | proxy p50/p99 ms | single p50/p99 ms | "
                 "tps proxy/single | p50 latency proxy/single |",
                 "|---|---|---|---|---|---|---|"]
        for report in reports:
            p = results[report]["proxy"]
            s = results[report]["single"]
            pt, st = median([r.tps for r in p]), median([r.tps for r in s])
            p50p, p99p = median([r.p50 for r in p]), median([r.p99 for r in p])
            p50s, p99s = median([r.p50 for r in s]), median([r.p99 for r in s])
            if None in (pt, st, p50p, p99p, p50s, p99s):
                lines.append(f"| {report} | failed: {[r.error for r in p + s if r.error][:1]} |")
                continue
            lines.append(f"| {report} | {pt:.0f} | {st:.0f} | {p50p:.2f}/{p99p:.2f} | "
                         f"{p50s:.2f}/{p99s:.2f} | {pt / st:.2f}x | {p50p / p50s:.2f}x |")
        text = "\n".join(lines)
        print(text)
        if args.markdown:
            Path(args.markdown).write_text(text + "\n")
        return 0
    except SetupError as e:
        log(f"failed: {e}")
        return 1
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            sharded.down()
            single.down()
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
