#!/usr/bin/env python3
"""Checks the Docker files against the repository (ctest `compose_files_check`, label unit).

No Docker engine runs anywhere here, so this is what can be checked without one:
  1. `docker-compose config` accepts docker-compose.yml (schema, depends_on conditions, env files);
  2. every file the Dockerfile COPYs and the compose file mounts, builds or reads exists, every
     binary the runtime stage copies is a CMake executable, and the build stage copies every
     directory the top-level CMakeLists.txt needs;
  3. the compose services name each other consistently (hosts in the configs are compose services,
     the fallback shard proxy ports are the ones they listen on, --config files are mounted);
  4. the secrets in docker/tally.env are the ones config/compose/*.yaml use;
  5. docker/postgres/tally.conf sets every setting the local cluster writes for its nodes.
Same keys as the local cluster and loadable by the real services: tests/unit/compose_config_test.cpp.

usage: check_compose.py [REPO_ROOT]      exit 0 when every check passes, 1 listing the failures.
"""
import os
import re
import shutil
import subprocess
import sys

try:
    import yaml  # python3-yaml, a dependency of Debian's docker-compose
except ImportError:
    print("check_compose: python3-yaml is missing: run scripts/install-deps.sh (docker-compose)")
    sys.exit(1)

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                       os.path.join(os.path.dirname(__file__), "..", ".."))
failures = []
checked = 0


def check(ok, message):
    global checked
    checked += 1
    if not ok:
        failures.append(message)
    return ok


def exists(rel, what):
    return check(os.path.exists(os.path.join(ROOT, rel)), f"{what}: {rel} does not exist")


def host_of(address):
    return address.rsplit(":", 1)[0]


# 1. docker-compose config --------------------------------------------------------------------
compose_file = os.path.join(ROOT, "docker-compose.yml")
if not exists("docker-compose.yml", "compose file"):
    print("\n".join(failures))
    sys.exit(1)
exe = shutil.which("docker-compose")
if check(exe is not None, "docker-compose is not installed: run scripts/install-deps.sh "
         "(Debian's docker-compose validates the file without a Docker engine)"):
    r = subprocess.run([exe, "-f", compose_file, "--project-directory", ROOT, "config", "-q"],
                       capture_output=True, text=True)
    check(r.returncode == 0, f"docker-compose config failed ({r.returncode}):\n{r.stderr.strip()}")

with open(compose_file) as f:
    compose = yaml.safe_load(f)
services = compose.get("services", {})
named_volumes = set((compose.get("volumes") or {}).keys())

# 2a. Dockerfile ------------------------------------------------------------------------------
exists("Dockerfile", "Dockerfile")
with open(os.path.join(ROOT, "Dockerfile")) as f:
    docker_lines = f.read().replace("\\\n", " ").splitlines()
stages = set()
copied_dirs = set()
executables = set()
for cm_dir, _, files in os.walk(ROOT):
    if "/build" in cm_dir[len(ROOT):] or "/.git" in cm_dir[len(ROOT):]:
        continue
    if "CMakeLists.txt" in files:
        with open(os.path.join(cm_dir, "CMakeLists.txt")) as f:
            executables.update(re.findall(r"add_executable\(\s*([A-Za-z0-9_]+)", f.read()))
for line in docker_lines:
    words = line.split()
    if not words or words[0].startswith("#"):
        continue
    if words[0].upper() == "FROM" and len(words) >= 4 and words[2].upper() == "AS":
        stages.add(words[3])
    if words[0].upper() == "COPY":
        args = words[1:]
        from_stage = next((a.split("=", 1)[1] for a in args if a.startswith("--from=")), None)
        sources = [a for a in args if not a.startswith("--")][:-1]
        check(len(sources) > 0, f"Dockerfile: COPY without a source: {line.strip()}")
        for src in sources:
            if from_stage is None:
                exists(src.rstrip("/"), "Dockerfile COPY")
                copied_dirs.add(src.rstrip("/"))
            elif src.startswith("/src/build/bin/"):
                name = src[len("/src/build/bin/"):]
                check(name in executables,
                      f"Dockerfile: COPY --from={from_stage} {src}: no CMake add_executable({name})")
    if words[0].upper() == "RUN" and "install-deps.sh" in line and "--build" in line:
        with open(os.path.join(ROOT, "scripts", "install-deps.sh")) as f:
            check('"--build"' in f.read(), "Dockerfile runs install-deps.sh --build, which the "
                  "script does not support")
# Every stage a compose service runs drops root (the build stage may stay root).
stage_user, current = {}, None
for line in docker_lines:
    words = line.split()
    if words[:1] == ["FROM"]:
        current = words[3] if len(words) >= 4 and words[2].upper() == "AS" else None
    elif words[:1] == ["USER"] and current:
        stage_user[current] = words[1]
for name, svc in services.items():
    build = svc.get("build")
    target = build.get("target") if isinstance(build, dict) else None
    if target:
        check(stage_user.get(target, "root") not in ("root", "0"),
              f"Dockerfile: stage '{target}' (service {name}) runs as root: add a USER")
with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
    top = f.read()
for needed in re.findall(r"add_subdirectory\(\s*([^\s)]+)", top) + \
        [os.path.dirname(p) for p in re.findall(r"include\(\s*([^\s)]+\.cmake)", top)] + \
        ["migrations"]:
    check(needed in copied_dirs, f"Dockerfile: the build stage does not COPY {needed}/ "
          "(CMakeLists.txt needs it)")
for ep in re.findall(r'ENTRYPOINT \["([^"]+)"', "\n".join(docker_lines)):
    copied_to = [l for l in docker_lines if l.split()[:1] == ["COPY"] and l.split()[-1] == ep]
    if check(copied_to, f"Dockerfile: ENTRYPOINT {ep} is not COPYed"):
        src = copied_to[0].split()[1]
        check(os.access(os.path.join(ROOT, src), os.X_OK), f"Dockerfile: {src} is not executable")

# 2b. compose file references -----------------------------------------------------------------
for name, svc in services.items():
    build = svc.get("build")
    if build:
        ctx = build.get("context", ".") if isinstance(build, dict) else build
        exists(os.path.join(ctx, "Dockerfile"), f"service {name}: build context")
        target = build.get("target") if isinstance(build, dict) else None
        if target:
            check(target in stages, f"service {name}: build target '{target}' is no Dockerfile "
                  f"stage (stages: {sorted(stages)})")
    env_files = svc.get("env_file", [])
    for env_file in [env_files] if isinstance(env_files, str) else env_files:
        exists(env_file, f"service {name}: env_file")
    mounts = {}
    for v in svc.get("volumes", []):
        src, dst = v.split(":")[0], v.split(":")[1]
        if src.startswith(".") or src.startswith("/"):
            exists(src, f"service {name}: bind mount")
        else:
            check(src in named_volumes, f"service {name}: volume '{src}' is not declared")
        mounts[dst] = src
    command = svc.get("command") or []
    if isinstance(command, str):
        command = command.split()
    if "--config" in command:
        cfg = command[command.index("--config") + 1]
        check(cfg in mounts, f"service {name}: --config {cfg} is not mounted")
        check(command[0] in executables, f"service {name}: runs {command[0]}, no such binary")
        if cfg in mounts:
            exists(mounts[cfg], f"service {name}: config")
    if "healthcheck" in svc and any("curl" in str(t) for t in svc["healthcheck"]["test"]):
        port = re.search(r"127\.0\.0\.1:(\d+)/healthz", " ".join(svc["healthcheck"]["test"]))
        published = [p.split(":")[-1] for p in svc.get("ports", [])]
        check(port and port.group(1) in published,
              f"service {name}: health-checked port is not among its published ports")

# 3. names between the services ---------------------------------------------------------------
def load_config(service):
    cmd = services[service]["command"]
    mount = cmd[cmd.index("--config") + 1]
    src = next((v.split(":")[0] for v in services[service].get("volumes", [])
                if v.split(":")[1] == mount), None)
    if src is None or not os.path.exists(os.path.join(ROOT, src)):
        return None  # already reported above
    with open(os.path.join(ROOT, src)) as f:
        return yaml.safe_load(f)


configs = {n: load_config(n) for n, s in services.items()
           if isinstance(s.get("command"), list) and "--config" in s["command"]}
configs = {n: c for n, c in configs.items() if c is not None}
listen_pg = {}
for name, cfg in configs.items():
    if "shard_proxy" in cfg:
        sp = cfg["shard_proxy"]
        for key in ("leader", "replica"):
            check(host_of(sp["backend"][key]) in services,
                  f"{name}: backend.{key} {sp['backend'][key]} is not a compose service")
        check(sp["listen"].get("advertise_address") == name,
              f"{name}: listen.advertise_address must be its service name '{name}' (what ZooKeeper "
              "tells the cluster proxy)")
        listen_pg[name] = sp["listen"]["pg_port"]
    for section in cfg.values():
        zk = (section.get("zookeeper") or {}).get("hosts")
        if zk:
            check(all(host_of(h) in services for h in zk.split(",")),
                  f"{name}: zookeeper.hosts {zk} names no compose service")
init_cmd = services.get("init", {}).get("command", [])
if check("--shards" in init_cmd, "service init: no tallyctl bootstrap --shards"):
    for entry in init_cmd[init_cmd.index("--shards") + 1].split(","):
        for node in entry.split("=", 1)[1].split("/"):
            check(host_of(node) in services, f"service init: {node} is not a compose service")
for name, cfg in configs.items():
    if "cluster_proxy" in cfg:
        for rng, spec in cfg["cluster_proxy"].get("shards", {}).items():
            for proxy in spec["proxies"]:
                host, port = proxy.rsplit(":", 1)
                check(listen_pg.get(host) == int(port),
                      f"{name}: shard {rng} proxy {proxy} is not a shard proxy listening there")
    if "processor" in cfg:
        url = cfg["processor"]["cluster_proxy"]["url"]
        check(re.sub(r"^https?://", "", url).rsplit(":", 1)[0] in services,
              f"{name}: cluster_proxy.url {url} names no compose service")

# 4. secrets ----------------------------------------------------------------------------------
env = {}
env_path = os.path.join(ROOT, "docker", "tally.env")
if os.path.exists(env_path):
    for line in open(env_path):
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.strip().split("=", 1)
            env[k] = v
admin, analyst, token = (env.get("TALLY_ADMIN_PASSWORD"), env.get("TALLY_ANALYST_PASSWORD"),
                         env.get("TALLY_REST_TOKEN"))
check(admin and analyst and token, "docker/tally.env lacks a password or the REST token")
for name, cfg in configs.items():
    if "shard_proxy" in cfg:
        users = cfg["shard_proxy"]["auth"]["users"]
        check(admin and users.get(env.get("TALLY_ADMIN_USER", "tally"), {}).get("password") == admin,
              f"{name}: the admin password differs from docker/tally.env")
        check(analyst and users.get("tally_analyst", {}).get("password") == analyst,
              f"{name}: the tally_analyst password differs from docker/tally.env")
    if "config_service" in cfg:
        check(cfg["config_service"]["postgres"]["password"] == admin,
              f"{name}: postgres.password differs from docker/tally.env")
    if "cluster_proxy" in cfg:
        check(cfg["cluster_proxy"]["backend"]["password"] == admin,
              f"{name}: backend.password differs from docker/tally.env")
        check(token in cfg["cluster_proxy"]["auth"]["write_tokens"],
              f"{name}: auth.write_tokens lacks TALLY_REST_TOKEN of docker/tally.env")
    if "processor" in cfg:
        check(cfg["processor"]["cluster_proxy"]["token"] == token,
              f"{name}: cluster_proxy.token differs from TALLY_REST_TOKEN of docker/tally.env")

# 5. PostgreSQL settings ----------------------------------------------------------------------
with open(os.path.join(ROOT, "tallyctl", "src", "postgres_node.cpp")) as f:
    node_src = f.read()
body = node_src[node_src.index("PostgresNode::write_settings"):]
body = body[:body.index("\n}\n")]
local_keys = set(re.findall(r'<< "([a-z_]+) = ', body))
check(len(local_keys) > 10, "found no settings in PostgresNode::write_settings (parser outdated?)")
conf_path = os.path.join(ROOT, "docker", "postgres", "tally.conf")
if exists("docker/postgres/tally.conf", "PostgreSQL settings"):
    compose_keys = set(re.findall(r"^([a-z_]+) = ", open(conf_path).read(), re.M))
    missing = sorted(local_keys - compose_keys)
    check(not missing, f"docker/postgres/tally.conf lacks settings the local cluster writes: "
          f"{missing}")

if failures:
    print(f"check_compose: {len(failures)} of {checked} checks FAILED:")
    for f in failures:
        print("  - " + f)
    sys.exit(1)
print(f"check_compose: all {checked} checks passed ({len(services)} services, "
      f"{len(configs)} service configs)")
