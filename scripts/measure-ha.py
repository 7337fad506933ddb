#!/usr/bin/env python3
"""High availability of the REAL agent (issue 14), measured on loopback: replicas of
`poolpilot run` sharing a throwaway PostgreSQL cluster, against `poolpilot emulator`.

  failover: RUNS times, two replicas, a pool of 10 whose creates are paced at 2 a second;
            kill -9 of the leader once 3 members exist; the time from the kill to the new
            leader's first action (the first sandbox E2B shows created with the new
            generation), and whether any sandbox or Idempotency-Key was made twice.
  load:     one leader with a pool of MEMBERS members at rest for SECONDS seconds; the
            statements per second it runs on PostgreSQL (pg_stat_statements) and the
            transactions per second (pg_stat_database).

  [BIN=target/release/poolpilot] scripts/measure-ha.py [failover RUNS] [load MEMBERS SECONDS]

Without BIN it builds the release binary first. Needs Debian's postgresql (scripts/test.sh
installs it). Everything it starts is stopped on exit. Prints one line per run, then a
summary; exits 1 if a double create was seen.
"""

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

KEY = "e2b_0123456789abcdef0123456789abcdef01234567"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get_json(url, timeout=2.0):
    try:
        req = urllib.request.Request(url, headers={"X-API-Key": KEY})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"null")
    except Exception:
        try:
            return json.loads(sys.exc_info()[1].read())  # an HTTP error with a JSON body
        except Exception:
            return None


def up(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except Exception:
        return False


def wait(what, seconds, check, every=0.05):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        v = check()
        if v:
            return v
        time.sleep(every)
    raise SystemExit(f"timed out waiting for {what}")


class Postgres:
    """initdb into a temporary folder, pg_ctl start on a free port (as `postgres` when root)."""

    def __init__(self, work):
        versions = sorted(os.listdir("/usr/lib/postgresql"))
        self.bin = f"/usr/lib/postgresql/{versions[-1]}/bin"
        self.dir = os.path.join(work, "pg")
        os.makedirs(self.dir)
        self.root = os.geteuid() == 0
        if self.root:
            subprocess.run(["chown", "-R", "postgres:postgres", work], check=True)
        self.port = free_port()
        self.run("initdb", "-D", f"{self.dir}/data", "-U", "poolpilot", "--auth=trust", "--no-sync")
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c shared_preload_libraries=pg_stat_statements")
        self.run("pg_ctl", "-D", f"{self.dir}/data", "-o", opts, "-l", f"{self.dir}/log", "-w", "start")

    def run(self, tool, *args, capture=False):
        cmd = [f"{self.bin}/{tool}", *args]
        if self.root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True)

    def sql(self, db, query):
        out = self.run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "poolpilot",
                       "-d", db, "-At", "-c", query, capture=True)
        return out.stdout.strip()

    def database(self, name):
        self.sql("postgres", f'CREATE DATABASE "{name}"')
        return f"postgres://poolpilot@127.0.0.1:{self.port}/{name}"

    def stop(self):
        try:
            self.run("pg_ctl", "-D", f"{self.dir}/data", "-m", "immediate", "stop", capture=True)
        except Exception:
            pass


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, args, log, env=None):
        e = dict(os.environ, E2B_API_KEY=KEY, POOLPILOT_LOG="warn")
        e.pop("CREDENTIALS_DIRECTORY", None)
        e.update(env or {})
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=e)
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait()


def replica(procs, binary, work, name, emu, store, rules, members_rate="2"):
    d = os.path.join(work, name)
    os.makedirs(d)
    port = free_port()
    with open(f"{d}/rules.yaml", "w") as f:
        f.write(rules)
    with open(f"{d}/poolpilot.yaml", "w") as f:
        f.write(f'api: {{ url: "{emu}", create_rate: {members_rate}, max_concurrent: 5000 }}\nrules: [rules.yaml]\n'
                f"state_dir: state\nlisten: 127.0.0.1:{port}\npoll: {{ metrics: 1s, events: 2s }}\n"
                f'store: "{store}"\nlease: 10s\n')
    p = procs.start([binary, "run", "--config", f"{d}/poolpilot.yaml"], f"{d}/log")
    return {"port": port, "proc": p}


def role(r):
    v = get_json(f"http://127.0.0.1:{r['port']}/readyz")
    return ((v or {}).get("replica") or {}).get("role", "")


def created(emu, pool):
    """E2B's created events of `pool`, oldest first, from the emulator's events API."""
    out, offset = [], 0
    while True:
        page = get_json(f"{emu}/events/sandboxes?limit=100&offset={offset}", timeout=5) or []
        if not page:
            break
        offset += len(page)
        out.extend(page)
    def meta(e):
        return ((e.get("eventData") or {}).get("sandbox_metadata") or {})
    return [e for e in out if e["type"].endswith(".created") and meta(e).get("poolpilot_pool") == pool]


def one_failover(binary, work, run):
    procs = Procs()
    pg = Postgres(os.path.join(work, f"run{run}"))
    try:
        store = pg.database("ha")
        emu_port = free_port()
        emu = f"http://127.0.0.1:{emu_port}"
        procs.start([binary, "emulator", "--listen", f"127.0.0.1:{emu_port}", "--create-rate", "0",
                     "--log-level", "warn"], os.path.join(work, f"run{run}", "emu.log"))
        wait("the emulator", 10, lambda: up(f"{emu}/health"))
        rules = "pools:\n  - { name: w, min: 10, max: 10 }\n"
        reps = [replica(procs, binary, os.path.join(work, f"run{run}"), n, emu, store, rules)
                for n in ("a", "b")]
        leader = wait("a leader", 30, lambda: next((r for r in reps if role(r) == "leader"), None))
        other = reps[1 - reps.index(leader)]
        wait("3 members", 30, lambda: len(created(emu, "w")) >= 3)
        gens_before = {e["eventData"]["sandbox_metadata"].get("poolpilot_generation") for e in created(emu, "w")}
        leader["proc"].kill()
        t0 = time.monotonic()
        def new_action():
            for e in created(emu, "w"):
                if e["eventData"]["sandbox_metadata"].get("poolpilot_generation") not in gens_before:
                    return True
            return False
        wait("the new leader's first create", 60, new_action, every=0.01)
        took = time.monotonic() - t0
        wait("the pool at 10", 60, lambda: (get_json(f"http://127.0.0.1:{other['port']}/api/v1/pools/w") or {}).get("actual") == 10)
        made = created(emu, "w")
        keys = [e["eventData"]["sandbox_metadata"].get("poolpilot_create") for e in made]
        double = len(made) != 10 or len(set(keys)) != len(keys)
        return took, len(made), double
    finally:
        procs.stop_all()
        pg.stop()


def failover(binary, work, runs):
    times, doubles = [], 0
    for i in range(runs):
        took, made, double = one_failover(binary, work, i)
        times.append(took)
        doubles += double
        print(f"run {i + 1}: kill -9 to the new leader's first create {took:.2f}s; sandboxes made {made}; double {double}")
    print(f"failover over {runs} runs (lease 10s): median {statistics.median(times):.2f}s, "
          f"worst {max(times):.2f}s, best {min(times):.2f}s; runs with a double create: {doubles}")
    return doubles == 0


def load(binary, work, members, seconds):
    procs = Procs()
    pg = Postgres(os.path.join(work, "load"))
    try:
        store = pg.database("ha")
        pg.sql("ha", "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        emu_port = free_port()
        emu = f"http://127.0.0.1:{emu_port}"
        procs.start([binary, "emulator", "--listen", f"127.0.0.1:{emu_port}", "--create-rate", "0",
                     "--max-concurrent", str(members * 2 + 100), "--log-level", "warn"],
                    os.path.join(work, "load", "emu.log"))
        wait("the emulator", 10, lambda: up(f"{emu}/health"))
        rules = f"pools:\n  - {{ name: w, min: {members}, max: {members} }}\n"
        r = replica(procs, binary, os.path.join(work, "load"), "a", emu, store, rules, members_rate="1000")
        standby = replica(procs, binary, os.path.join(work, "load"), "b", emu, store, rules, members_rate="1000")
        wait(f"{members} members", 300, lambda: (get_json(f"http://127.0.0.1:{r['port']}/api/v1/pools/w") or {}).get("actual") == members or
             (get_json(f"http://127.0.0.1:{standby['port']}/api/v1/pools/w") or {}).get("actual") == members, every=0.5)
        def totals():
            calls = int(pg.sql("ha", "SELECT COALESCE(SUM(calls), 0) FROM pg_stat_statements s "
                                     "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = 'ha'") or 0)
            xacts = int(pg.sql("ha", "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'ha'") or 0)
            return calls, xacts
        c0, x0 = totals()
        time.sleep(seconds)
        c1, x1 = totals()
        print(f"load: two replicas, the leader with {members} members at rest, poll 1s, lease 10s: "
              f"{(c1 - c0) / seconds:.1f} statements/s and {(x1 - x0) / seconds:.1f} transactions/s on PostgreSQL "
              f"(both replicas, measured over {seconds}s)")
        return True
    finally:
        procs.stop_all()
        pg.stop()


def main():
    args = sys.argv[1:] or ["failover", "20", "load", "1000", "60"]
    binary = os.environ.get("BIN")
    if not binary:
        t0 = time.monotonic()
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "poolpilot"], cwd=ROOT, check=True)
        print(f"release build: {time.monotonic() - t0:.0f}s")
        binary = os.path.join(ROOT, "target/release/poolpilot")
    work = tempfile.mkdtemp(prefix="poolpilot-ha-")
    os.chmod(work, 0o755)
    ok = True
    try:
        while args:
            what = args.pop(0)
            if what == "failover":
                ok &= failover(binary, work, int(args.pop(0)))
            elif what == "load":
                ok &= load(binary, work, int(args.pop(0)), int(args.pop(0)))
            else:
                raise SystemExit(f"unknown measurement {what!r}: failover RUNS | load MEMBERS SECONDS")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
