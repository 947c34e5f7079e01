#!/usr/bin/env python3
"""shard_proxy throughput/latency benchmark: PostgreSQL direct vs pgbouncer vs shard_proxy.

Brings up a fresh 1-shard Tally cluster (`tallyctl cluster up`) on a free block of loopback ports,
loads N videos into video_totals on the leader, starts Debian's pgbouncer (transaction pooling,
pool size 20, like the shard proxy) in front of the leader, and drives all three targets with
pgbench, side by side:

  * point reads   `SELECT count, sum FROM video_totals WHERE video_id = 'v' || :id AND ...`
                  with id uniform in 1..N, for -M simple / extended / prepared at 1, 8, 32 clients;
  * cache rows    the same query with `/*tally: cache_ttl_ms=5000*/` prepended and a hot key set
                  (id in 1..100), shard_proxy vs PostgreSQL direct (and shard_proxy without the hint).

The machine is small and shared, so absolute numbers mean little: the targets compare RATIOS
measured in the same run. Targets of one (mode, clients) cell run interleaved (the order rotates
per repeat) and every figure is the median over the repeats. p99 comes from pgbench's
per-transaction log (--log). The targets (design brief, "Numbers we hold ourselves to"):
simple/extended >= 1.0x pgbouncer, prepared >= 0.8x direct, cache >= 2x direct. A target not met
is reported, not a failure: the exit code is 0 when the benchmark ran, 1 when a server could not
be started or the set-up failed, 2 on bad arguments, 130 when interrupted.

Everything started here is stopped by PID (pgbouncer) or by `tallyctl cluster down` (the cluster),
and the temporary directory is removed unless --keep, also on errors and Ctrl-C. Loopback only.

Usage:
  tests/bench/shard_proxy_bench.py [--build-dir DIR] [--quick] [--repeats R] [--duration S]
      [--clients 1,8,32] [--modes simple,extended,prepared] [--videos N] [--base-port P]
      [--markdown PATH] [--profile] [--keep]
Standard library only; needs pgbench/psql (postgresql-client-15) and pgbouncer on PATH or in
the Debian locations.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import bench_support
from bench_support import SetupError, find_tool, port_free, pick_base_port, run_cmd, percentile

REPO = Path(__file__).resolve().parents[2]
PGBOUNCER_OFFSET = 150  # pgbouncer listens at base+150, inside the checked block
HOT_KEYS = 100
CACHE_HINT = "/*tally: cache_ttl_ms=5000*/ "
POINT_QUERY = ("SELECT count, sum FROM video_totals "
               "WHERE video_id = 'v' || :id AND event_type = 'view';")

# Targets of the issue: (column compared against, minimum ratio).
TARGETS = {
    "simple": ("pgbouncer", 1.0),
    "extended": ("pgbouncer", 1.0),
    "prepared": ("direct", 0.8),
    "cache": ("direct", 2.0),
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Cluster and pgbouncer


@dataclass
class Endpoint:
    name: str
    port: int


@dataclass
class Env:
    tmp: Path
    cluster_dir: Path
    tallyctl: str
    psql: str
    pgbench: str
    pgbouncer: str
    base_port: int = 0
    manifest: dict = field(default_factory=dict)
    user: str = ""
    password: str = ""
    database: str = "tally"
    run_as: Optional[str] = None  # service account when we are root (pgbouncer refuses root)
    cluster_started: bool = False
    pgbouncer_proc: Optional[subprocess.Popen] = None
    pgbouncer_log: Optional[Path] = None

    def process(self, role: str) -> dict:
        for p in self.manifest.get("processes", []):
            if p.get("role") == role:
                return p
        raise SetupError(f"cluster.json lists no {role}")

    def pg_env(self) -> Dict[str, str]:
        env = dict(os.environ)
        for k in ("PGSERVICE", "PGSERVICEFILE", "PGOPTIONS", "PGPASSFILE"):
            env.pop(k, None)
        env.update(PGHOST="127.0.0.1", PGUSER=self.user, PGPASSWORD=self.password,
                   PGDATABASE=self.database, PGSSLMODE="disable", PGCONNECT_TIMEOUT="10",
                   PGAPPNAME="shard_proxy_bench")
        return env


def psql(env: Env, port: int, sql: str, timeout: float = 120) -> str:
    r = run_cmd([env.psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-p", str(port),
                 "-c", sql], timeout, env.pg_env(), "psql")
    if r.returncode != 0:
        raise SetupError(f"psql on port {port} failed: {r.stderr.strip()}")
    return r.stdout.strip()


def cluster_up(env: Env, args) -> None:
    env.base_port = pick_base_port(args.base_port)
    log(f"cluster up in {env.cluster_dir} (base port {env.base_port})")
    env.cluster_started = True  # from here on `cluster down` runs in the cleanup
    r = run_cmd([env.tallyctl, "cluster", "up", "--dir", str(env.cluster_dir), "--shards", "1",
                 "--base-port", str(env.base_port)], 300, what="tallyctl cluster up")
    if r.returncode != 0:
        raise SetupError(f"tallyctl cluster up failed (exit {r.returncode}):\n"
                         f"{r.stdout[-3000:]}{r.stderr[-3000:]}")
    env.manifest = json.loads((env.cluster_dir / "cluster.json").read_text())
    admin = env.manifest["users"]["admin"]
    env.user, env.password = admin["name"], admin["password"]
    env.database = env.manifest.get("database", "tally")


def load_data(env: Env, videos: int) -> None:
    leader = env.process("pg_leader")["ports"]["pg"]
    replica = env.process("pg_replica")["ports"]["pg"]
    log(f"loading {videos} videos into video_totals on the leader (port {leader})")
    psql(env, leader,
         "INSERT INTO video_totals (video_id, event_type, count, sum, ksid) "
         f"SELECT 'v' || i, 'view', (random() * 1000000)::bigint, (random() * 1000000000)::bigint, 0 "
         f"FROM generate_series(1, {videos}) AS i "
         "ON CONFLICT (video_id, event_type) DO UPDATE SET count = EXCLUDED.count, sum = EXCLUDED.sum",
         timeout=300)
    psql(env, leader, "VACUUM ANALYZE video_totals", timeout=300)
    lsn = psql(env, leader, "SELECT pg_current_wal_lsn()")
    deadline = time.monotonic() + 120
    while True:
        caught_up = psql(env, replica, f"SELECT coalesce(pg_last_wal_replay_lsn() >= '{lsn}', false)")
        if caught_up == "t":
            break
        if time.monotonic() > deadline:
            raise SetupError(f"replica (port {replica}) did not replay up to {lsn} within 120 s")
        time.sleep(0.2)
    n = psql(env, replica, "SELECT count(*) FROM video_totals WHERE event_type = 'view'")
    log(f"replica caught up (LSN {lsn}, {n} view rows)")


def service_account(env: Env) -> Optional[str]:
    if os.geteuid() != 0:
        return None
    # The account tallyctl runs the servers as (local_cluster.service_user, default tally).
    leader_dir = Path(env.process("pg_leader")["data_dir"])
    try:
        import pwd
        return pwd.getpwuid(leader_dir.stat().st_uid).pw_name
    except (KeyError, OSError):
        return "tally"


def start_pgbouncer(env: Env) -> Endpoint:
    leader = env.process("pg_leader")["ports"]["pg"]
    port = env.base_port + PGBOUNCER_OFFSET
    if not port_free(port):
        raise SetupError(f"pgbouncer port {port} is taken")
    d = env.tmp / "pgbouncer"
    d.mkdir()
    userlist = d / "userlist.txt"
    userlist.write_text(f'"{env.user}" "{env.password}"\n')
    ini = d / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        f"{env.database} = host=127.0.0.1 port={leader} dbname={env.database}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = scram-sha-256\n"
        f"auth_file = {userlist}\n"
        "pool_mode = transaction\n"
        "default_pool_size = 20\n"
        "max_client_conn = 200\n"
        "server_tls_sslmode = disable\n"
        "ignore_startup_parameters = extra_float_digits\n"
        f"logfile = {d / 'pgbouncer.log'}\n"
        "log_connections = 0\n"
        "log_disconnections = 0\n"
        "stats_period = 3600\n")
    env.pgbouncer_log = d / "pgbouncer.log"
    cmd = [env.pgbouncer, str(ini)]
    env.run_as = service_account(env)
    if env.run_as:
        import pwd
        pw = pwd.getpwnam(env.run_as)
        os.chmod(env.tmp, 0o755)
        for p in (d, userlist, ini):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        userlist.chmod(0o600)
        # setpriv execs pgbouncer in place, so the PID we hold is pgbouncer's own.
        cmd = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups",
               "--"] + cmd
    else:
        userlist.chmod(0o600)
    log(f"starting pgbouncer on 127.0.0.1:{port} -> leader :{leader}"
        + (f" as {env.run_as}" if env.run_as else ""))
    stdio = open(d / "stdout.log", "w")
    env.pgbouncer_proc = subprocess.Popen(cmd, stdout=stdio, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, cwd=d)
    stdio.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if env.pgbouncer_proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
            psql(env, port, "SELECT 1", timeout=20)
            return Endpoint("pgbouncer", port)
        except (OSError, SetupError):
            time.sleep(0.2)
    out = ""
    for f in (d / "stdout.log", d / "pgbouncer.log"):
        if f.exists():
            out += f.read_text()[-2000:]
    raise SetupError(f"pgbouncer did not come up on port {port}:\n{out}")


def stop_pgbouncer(env: Env) -> None:
    p = env.pgbouncer_proc
    if not p or p.poll() is not None:
        return
    log(f"stopping pgbouncer (pid {p.pid})")
    p.send_signal(signal.SIGINT)  # pgbouncer: SIGINT = safe shutdown, SIGTERM = immediate
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)


def cluster_down(env: Env) -> None:
    if env.cluster_started:
        bench_support.cluster_down(env.tallyctl, env.cluster_dir, log)


# ---------------------------------------------------------------------------------------------
# pgbench


@dataclass
class RunResult:
    tps: Optional[float] = None
    avg_ms: Optional[float] = None
    p99_ms: Optional[float] = None
    error: Optional[str] = None


def write_script(env: Env, name: str, keys: int, hint: str) -> Path:
    p = env.tmp / f"{name}.sql"
    p.write_text(f"\\set id random(1, {keys})\n{hint}{POINT_QUERY}\n")
    return p


def first_error_line(text: str) -> str:
    for line in text.splitlines():
        low = line.lower()
        if "error" in low or "aborted" in low or "fatal" in low:
            line = " ".join(line.replace("pgbench: error: ", "").split())
            return line[:200]
    lines = [l for l in text.splitlines() if l.strip()]
    return lines[0][:200] if lines else "no output"


def pgbench(env: Env, target: Endpoint, script: Path, mode: str, clients: int, seconds: int,
            tag: str) -> RunResult:
    logdir = env.tmp / "pgbench-logs" / tag
    logdir.mkdir(parents=True, exist_ok=True)
    cmd = [env.pgbench, "-n", "--no-vacuum", "-T", str(seconds), "-c", str(clients),
           "-j", str(min(clients, 2)), "-M", mode, "-f", str(script), "-p", str(target.port),
           "--log", f"--log-prefix={logdir / 'tx'}"]
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=seconds + 120, env=env.pg_env(), cwd=logdir)
    except subprocess.TimeoutExpired:
        shutil.rmtree(logdir, ignore_errors=True)
        return RunResult(error=f"pgbench did not finish within {seconds + 120} s")
    out = r.stdout + r.stderr
    res = RunResult()
    failed = 0
    for line in r.stdout.splitlines():
        line = line.strip()
        if line.startswith("tps =") and res.tps is None:
            res.tps = float(line.split("=")[1].split()[0])
        elif line.startswith("latency average ="):
            res.avg_ms = float(line.split("=")[1].split()[0])
        elif line.startswith("number of failed transactions:"):
            failed = int(line.split(":")[1].split()[0])
    if r.returncode != 0 or "aborted" in out or failed or res.tps is None:
        res.error = first_error_line(r.stderr or r.stdout)
    lat: List[int] = []
    for f in logdir.iterdir():
        with open(f) as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 3 and parts[2].isdigit():
                    lat.append(int(parts[2]))
    shutil.rmtree(logdir, ignore_errors=True)
    if lat:
        lat.sort()
        res.p99_ms = percentile(lat, 0.99) / 1000.0
    return res


@dataclass
class Cell:
    """Repeated runs of one target in one (mode, clients) cell."""
    runs: List[RunResult] = field(default_factory=list)

    def ok_runs(self) -> List[RunResult]:
        return [r for r in self.runs if r.error is None and r.tps is not None]

    def failed(self) -> Optional[str]:
        bad = [r for r in self.runs if r.error is not None]
        return bad[0].error if bad else None

    def median(self, attr: str) -> Optional[float]:
        if self.failed():
            return None
        vals = [getattr(r, attr) for r in self.ok_runs() if getattr(r, attr) is not None]
        return statistics.median(vals) if vals else None


def run_cell(env: Env, targets: List[Endpoint], script: Path, mode: str, clients: int,
             seconds: int, repeats: int, label: str) -> Dict[str, Cell]:
    cells = {t.name: Cell() for t in targets}
    for rep in range(repeats):
        order = targets[rep % len(targets):] + targets[:rep % len(targets)]
        for t in order:
            res = pgbench(env, t, script, mode, clients, seconds, f"{label}-{t.name}-{rep}")
            cells[t.name].runs.append(res)
            if res.error:
                log(f"  {label} {mode:8} c={clients:<2} {t.name:12} rep {rep + 1}: FAILED {res.error}")
            else:
                log(f"  {label} {mode:8} c={clients:<2} {t.name:12} rep {rep + 1}: "
                    f"{res.tps:9.0f} tps  avg {res.avg_ms:.3f} ms  p99 {res.p99_ms or 0:.3f} ms")
    return cells


# ---------------------------------------------------------------------------------------------
# CPU profile (--profile): CPU share per process name during a 32-client extended run


def proc_cpu_ticks() -> Dict[int, tuple]:
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        comm = s[s.index("(") + 1:s.rindex(")")]
        fields = s[s.rindex(")") + 2:].split()
        out[int(d)] = (comm, int(fields[11]) + int(fields[12]))  # utime + stime
    return out


def profile_shard_proxy(env: Env, proxy: Endpoint, script: Path) -> List[str]:
    lines = []
    proxy_pid = env.process("shard_proxy")["pid"]
    secs = 16  # 2 s ramp-up, 5 s CPU sample (with top), 4 s perf record, margin
    cmd = [env.pgbench, "-n", "-T", str(secs), "-c", "32", "-j", "2", "-M", "extended",
           "-f", str(script), "-p", str(proxy.port)]
    bench = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=env.pg_env())
    try:
        time.sleep(2)
        hz = os.sysconf("SC_CLK_TCK")
        top = None
        if shutil.which("top"):
            # Two frames 5 s apart: the second one holds the CPU use over the sampling window.
            top = subprocess.Popen(["top", "-b", "-n", "2", "-d", "5", "-w", "160"],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        t0, a = time.monotonic(), proc_cpu_ticks()
        time.sleep(5)
        t1, b = time.monotonic(), proc_cpu_ticks()
        by_name: Dict[str, float] = collections.defaultdict(float)
        for pid, (comm, ticks) in b.items():
            prev = a.get(pid)
            if prev is None or prev[0] != comm:
                continue  # started during the window: skip (pgbench keeps its connections)
            delta = ticks - prev[1]
            if delta > 0:
                by_name[comm] += delta / hz
        wall = t1 - t0
        ncpu = os.cpu_count() or 1
        total = sum(by_name.values())
        lines.append(f"CPU over {wall:.1f} s of a 32-client extended run against shard_proxy, "
                     f"per process name from /proc ({ncpu} CPUs = {ncpu * wall:.1f} CPU-s, "
                     f"{total:.2f} CPU-s used):")
        for name, cpu in sorted(by_name.items(), key=lambda kv: -kv[1])[:8]:
            lines.append(f"  {name:16} {cpu:6.2f} CPU-s  {100 * cpu / wall:5.1f}% of one core  "
                         f"{100 * cpu / total:5.1f}% of CPU used")
        if top:
            out, _ = top.communicate(timeout=30)
            frames = out.split("top - ")
            if len(frames) >= 3:
                frame = frames[-1].splitlines()
                lines.append("top -b (second frame, 5 s):")
                hdr = next((i for i, l in enumerate(frame) if l.strip().startswith("PID")), None)
                if hdr is not None:
                    lines.extend("  " + l.rstrip() for l in frame[2:3] + frame[hdr:hdr + 13])
        perf = shutil.which("perf")
        try:
            if os.readlink(f"/proc/{proxy_pid}/exe").endswith(" (deleted)"):
                lines.append("note: the shard_proxy binary was rebuilt while this cluster ran; perf "
                             "cannot resolve its own symbols (shown as addresses)")
        except OSError:
            pass
        if perf:
            data = env.tmp / "perf.data"
            r = subprocess.run([perf, "record", "-g", "-o", str(data), "-p", str(proxy_pid), "--",
                                "sleep", "4"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, timeout=60)
            if r.returncode == 0 and data.exists():
                rep = subprocess.run([perf, "report", "-i", str(data), "--stdio", "--no-children",
                                      "-g", "none", "--percent-limit", "0.2"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     timeout=120)
                syms = [l.strip() for l in rep.stdout.splitlines()
                        if l.strip() and not l.startswith("#")]
                lines.append("perf record -g -p <shard_proxy> (4 s), top symbols by self time:")
                lines.extend("  " + l for l in syms[:15])
                user = [l for l in syms if "[k]" not in l]
                lines.append("  ... user-space symbols only:")
                lines.extend("  " + l for l in user[:15])
            else:
                lines.append(f"perf record failed: {first_error_line(r.stdout)}")
        else:
            lines.append("perf not found (apt-get install linux-perf): no symbol profile")
    finally:
        try:
            bench.wait(secs + 60)
        except subprocess.TimeoutExpired:
            bench.kill()
            bench.wait()
    return lines


# ---------------------------------------------------------------------------------------------
# Report


def fmt_tps(cell: Cell) -> str:
    err = cell.failed()
    if err:
        return f"n/a (fails: {err})"
    v = cell.median("tps")
    return f"{v:.0f}" if v is not None else "n/a"


def fmt_lat(cell: Cell) -> str:
    if cell.failed():
        return "n/a"
    a, p = cell.median("avg_ms"), cell.median("p99_ms")
    if a is None:
        return "n/a"
    return f"{a:.2f}/{p:.2f}" if p is not None else f"{a:.2f}/?"


def ratio(num: Cell, den: Cell) -> Optional[float]:
    a, b = num.median("tps"), den.median("tps")
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r: Optional[float]) -> str:
    return f"{r:.2f}x" if r is not None else "n/a"


def verdict(kind: str, r_pgb: Optional[float], r_direct: Optional[float]) -> str:
    against, need = TARGETS[kind]
    r = r_pgb if against == "pgbouncer" else r_direct
    if r is None:
        return f">= {need:.1f}x {against}: n/a"
    return f">= {need:.1f}x {against}: {'met' if r >= need else 'NOT MET'}"


def render(headers: List[str], rows: List[List[str]], markdown: bool) -> str:
    if markdown:
        out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
        return "\n".join(out)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    line = lambda cols: "  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip()
    out = [line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows]
    return "\n".join(out)


def build_report(args, env: Env, main: Dict, cache: Dict, profile: List[str], markdown: bool,
                 elapsed: float) -> str:
    headers = ["mode", "clients", "direct tps", "pgbouncer tps", "shard_proxy tps",
               "direct avg/p99 ms", "pgbouncer avg/p99 ms", "shard_proxy avg/p99 ms",
               "sp/pgbouncer", "sp/direct", "target"]
    rows = []
    for (mode, clients), cells in main.items():
        d, b, s = cells["direct"], cells["pgbouncer"], cells["shard_proxy"]
        r_b, r_d = ratio(s, b), ratio(s, d)
        rows.append([mode, str(clients), fmt_tps(d), fmt_tps(b), fmt_tps(s), fmt_lat(d), fmt_lat(b),
                     fmt_lat(s), fmt_ratio(r_b), fmt_ratio(r_d), verdict(mode, r_b, r_d)])
    cheaders = ["cache (hot 1..100, ttl 5000 ms)", "clients", "direct tps", "shard_proxy tps",
                "shard_proxy no-hint tps", "direct avg/p99 ms", "shard_proxy avg/p99 ms",
                "sp/direct", "sp no-hint/direct", "target"]
    crows = []
    for (mode, clients), cells in cache.items():
        d, s, n = cells["direct"], cells["shard_proxy"], cells["shard_proxy_nohint"]
        r_d = ratio(s, d)
        crows.append([mode, str(clients), fmt_tps(d), fmt_tps(s), fmt_tps(n), fmt_lat(d),
                      fmt_lat(s), fmt_ratio(r_d), fmt_ratio(ratio(n, d)),
                      verdict("cache", None, r_d)])
    title = (f"shard_proxy bench: {args.videos} videos, {args.repeats} repeat(s) x {args.duration} s "
             f"per run, medians; -j min(c,2); {os.cpu_count()} CPUs; {elapsed / 60:.1f} min total; "
             f"load average at start {args.load_start}, at end {os.getloadavg()[0]:.1f}")
    note = ("direct = PostgreSQL leader; pgbouncer 1.18 transaction pooling, pool 20, on the leader; "
            "shard_proxy = pool 20, 2 workers, reads routed to the replica. Latencies in ms "
            "(average / p99 from pgbench per-transaction logs).")
    parts = []
    if markdown:
        parts += [f"### {title}", "", note, "", render(headers, rows, True)]
        if crows:
            parts += ["", render(cheaders, crows, True)]
        if profile:
            parts += ["", "```", *profile, "```"]
    else:
        parts += [title, note, "", render(headers, rows, False)]
        if crows:
            parts += ["", render(cheaders, crows, False)]
        if profile:
            parts += ["", *profile]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------


def parse_args(argv: List[str]):
    ap = argparse.ArgumentParser(
        description="Benchmark shard_proxy against PostgreSQL direct and pgbouncer with pgbench "
                    "(ratios, medians of interleaved repeats).")
    ap.add_argument("--build-dir", type=Path, default=REPO / "build",
                    help="CMake build dir holding bin/tallyctl and bin/shard_proxy (default: %(default)s)")
    ap.add_argument("--quick", action="store_true",
                    help="one repeat of 4 s per run (ctest); default 3 repeats of 10 s")
    ap.add_argument("--repeats", type=int, help="runs per target and cell (median taken)")
    ap.add_argument("--duration", type=int, help="seconds per pgbench run (-T)")
    ap.add_argument("--clients", default="1,8,32", help="client counts (default: %(default)s)")
    ap.add_argument("--modes", default="simple,extended,prepared",
                    help="pgbench -M modes (default: %(default)s)")
    ap.add_argument("--cache-clients", default="8,32", help="client counts of the cache rows")
    ap.add_argument("--no-cache", action="store_true", help="skip the cache rows")
    ap.add_argument("--videos", type=int, default=10000, help="rows loaded (default: %(default)s)")
    ap.add_argument("--base-port", type=int,
                    help="first port of the block used (default: a random free block of 200)")
    ap.add_argument("--markdown", type=Path, help="also write the table as Markdown to PATH")
    ap.add_argument("--profile", action="store_true",
                    help="after the table, sample CPU per process and perf-record shard_proxy "
                         "during a 32-client extended run")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.duration = args.duration or (4 if args.quick else 10)
    try:
        args.clients = [int(c) for c in args.clients.split(",") if c]
        args.cache_clients = [int(c) for c in args.cache_clients.split(",") if c]
    except ValueError:
        ap.error("--clients/--cache-clients take comma-separated integers")
    args.modes = [m for m in args.modes.split(",") if m]
    for m in args.modes:
        if m not in ("simple", "extended", "prepared"):
            ap.error(f"unknown mode {m}")
    if args.repeats < 1 or args.duration < 1 or args.videos < HOT_KEYS:
        ap.error("--repeats and --duration must be >= 1, --videos >= 100")
    return args


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    args.load_start = f"{os.getloadavg()[0]:.1f}"

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    try:
        tallyctl = str(args.build_dir / "bin" / "tallyctl")
        if not os.access(tallyctl, os.X_OK):
            raise SetupError(f"{tallyctl} not found: build first (ninja -C {args.build_dir})")
        tools = dict(
            psql=find_tool("psql", "/usr/lib/postgresql/15/bin/psql"),
            pgbench=find_tool("pgbench", "/usr/lib/postgresql/15/bin/pgbench"),
            pgbouncer=find_tool("pgbouncer", "/usr/sbin/pgbouncer"))
    except SetupError as e:
        log(f"error: {e}")
        return 1

    # The servers run as the service account when we are root: the directory must be traversable.
    tmp = Path(tempfile.mkdtemp(prefix="tally-spbench-"))
    os.chmod(tmp, 0o755)
    env = Env(tmp=tmp, cluster_dir=tmp / "cluster", tallyctl=tallyctl, **tools)
    code = 0
    try:
        cluster_up(env, args)
        load_data(env, args.videos)
        bouncer = start_pgbouncer(env)
        direct = Endpoint("direct", env.process("pg_leader")["ports"]["pg"])
        proxy = Endpoint("shard_proxy", env.process("shard_proxy")["ports"]["pg"])
        targets = [direct, bouncer, proxy]
        uniform = write_script(env, "uniform", args.videos, "")
        hot = write_script(env, "hot_cache", HOT_KEYS, CACHE_HINT)
        hot_nohint = write_script(env, "hot_nohint", HOT_KEYS, "")

        log("warm-up (2 s per target)")
        for t in targets:
            r = pgbench(env, t, uniform, "simple", 8, 2, f"warmup-{t.name}")
            if r.error:
                raise SetupError(f"warm-up against {t.name} (port {t.port}) failed: {r.error}")

        main_cells: Dict = {}
        for mode in args.modes:
            for c in args.clients:
                main_cells[(mode, c)] = run_cell(env, targets, uniform, mode, c, args.duration,
                                                 args.repeats, "point")
        cache_cells: Dict = {}
        if not args.no_cache:
            for mode in ("extended", "simple"):
                for c in args.cache_clients:
                    cells = run_cell(env, [direct, proxy], hot, mode, c, args.duration,
                                     args.repeats, "cache")
                    nohint = run_cell(env, [Endpoint("shard_proxy_nohint", proxy.port)],
                                      hot_nohint, mode, c, args.duration, args.repeats, "cache")
                    cells.update(nohint)
                    cache_cells[(mode, c)] = cells

        profile: List[str] = []
        if args.profile:
            log("profiling shard_proxy during a 32-client extended run")
            try:
                profile = profile_shard_proxy(env, proxy, uniform)
            except (OSError, subprocess.SubprocessError) as e:
                profile = [f"profile failed: {e}"]

        elapsed = time.monotonic() - started
        print(build_report(args, env, main_cells, cache_cells, profile, False, elapsed), flush=True)
        if args.markdown:
            args.markdown.write_text(
                build_report(args, env, main_cells, cache_cells, profile, True, elapsed))
            log(f"Markdown written to {args.markdown}")
    except SetupError as e:
        log(f"error: {e}")
        code = 1
    except KeyboardInterrupt:
        log("interrupted")
        code = 130
    finally:
        # Ignore further Ctrl-C/TERM while cleaning up so nothing is left running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            stop_pgbouncer(env)
        finally:
            cluster_down(env)
            if args.keep:
                log(f"kept {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
