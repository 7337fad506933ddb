"""Drives E2B's official Python SDK against a running poolpilot emulator.

Run by tests/sdk_conformance.rs with E2B_API_URL and E2B_API_KEY pointing at the emulator.
Every method is called twice: with its defaults (no optional argument, the common call in
the wild) and with explicit arguments; each call's result is checked against what E2B
would answer. Any mismatch exits non-zero. The SDK has no lifecycle-events API to cover.
"""

import datetime
import os
import sys
import time
import uuid

from e2b import Sandbox, SandboxQuery, SandboxState
from e2b.exceptions import SandboxNotFoundException

SUITE = os.environ.get("CONFORMANCE_SUITE", "py")
# Seconds of slack for lifetimes: the emulator follows the wall clock at speed 1.
SLACK = 5.0


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def left(sandbox_id):
    """Seconds until the sandbox's end, as get_info reports it."""
    return (Sandbox.get_info(sandbox_id).end_at - now()).total_seconds()


def near(value, want):
    return abs(value - want) <= SLACK


def wait_for(fn, what, limit_s=15.0):
    """Polls fn until it returns something truthy; the emulator samples every interval."""
    deadline = time.monotonic() + limit_s
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            check(False, f"{what} within {limit_s}s")
        time.sleep(0.2)


def ids(items):
    return [i.sandbox_id for i in items]


# --- create ---------------------------------------------------------------------------
plain = Sandbox.create()
info = plain.get_info()
check(info.template_id == "base", "create() boots the default template, base")
check(near((info.end_at - info.started_at).total_seconds(), 300), "create() lives E2B's default 300 s")
check(info.metadata == {} and info.state == SandboxState.RUNNING, "create() has no metadata and runs")

meta = {"suite": SUITE, "owner": "poolpilot-conformance"}
key = f"conformance-{SUITE}-{uuid.uuid4()}"
explicit = dict(
    template="base",
    timeout=120,
    metadata=meta,
    envs={"GREETING": "hello"},
    allow_internet_access=False,
    lifecycle={"on_timeout": "pause"},
    idempotency_key=key,
)
sbx = Sandbox.create(**explicit)
info = sbx.get_info()
check(near((info.end_at - info.started_at).total_seconds(), 120), "create(timeout=120) lives 120 s")
check(info.metadata == meta, "create(metadata=...) keeps the metadata")
again = Sandbox.create(**explicit)
check(again.sandbox_id == sbx.sandbox_id, "create with the same idempotency_key returns the same sandbox")

others = [Sandbox.create(template="base", timeout=300, metadata=meta) for _ in range(4)]
mine = {sbx.sandbox_id} | set(ids(others))
everyone = mine | {plain.sandbox_id}

# --- list -----------------------------------------------------------------------------
paginator = Sandbox.list()
first = paginator.next_items()
check(set(ids(first)) == everyone and len(first) == 6, "list() returns every sandbox on one page")
check(not paginator.has_next and paginator.next_token is None, "list() has no further page")

paginator = Sandbox.list(query=SandboxQuery(metadata=meta), limit=2)
seen, pages = [], 0
while paginator.has_next:
    seen.extend(ids(paginator.next_items()))
    pages += 1
    if pages == 1:
        token = paginator.next_token
check(pages == 3, f"list(limit=2) pages 5 sandboxes in 3 pages (got {pages})")
check(set(seen) == mine and len(seen) == 5, "list(limit=2) returns each sandbox exactly once")
resumed_page = Sandbox.list(query=SandboxQuery(metadata=meta), limit=2, next_token=token).next_items()
check(ids(resumed_page) == seen[2:4], "list(next_token=...) continues where the first page ended")

asc = Sandbox.list(
    query=SandboxQuery(
        metadata=meta,
        state=[SandboxState.RUNNING, SandboxState.PAUSED],
        template="base",
        started_after=info.started_at - datetime.timedelta(seconds=1),
    ),
    limit=100,
    order="asc",
).next_items()
check(len(asc) == 5, "list filters by metadata, both states, template and started_after")
check(
    all(a.started_at <= b.started_at for a, b in zip(asc, asc[1:])),
    "list(order='asc') sorts by start time, oldest first",
)
check(Sandbox.list(query=SandboxQuery(template="nope")).next_items() == [], "list by an unknown template is empty")

# --- get_info -------------------------------------------------------------------------
info = sbx.get_info()
check(info.sandbox_id == sbx.sandbox_id and info.template_id == "base", "get_info() returns the sandbox")
check(info.cpu_count == 2 and info.memory_mb == 512, "base has 2 vCPU and 512 MiB")
same = Sandbox.get_info(sbx.sandbox_id)
check(same.sandbox_id == info.sandbox_id and same.metadata == meta, "Sandbox.get_info(id) returns the same")

# --- get_metrics ----------------------------------------------------------------------
metrics = wait_for(lambda: sbx.get_metrics(), "get_metrics() returns a sample")
m = metrics[-1]
for field in ("timestamp", "cpu_count", "cpu_used_pct", "mem_used", "mem_total", "mem_cache", "disk_used", "disk_total"):
    check(getattr(m, field, None) is not None, f"metric has {field}")
check(isinstance(m.timestamp, datetime.datetime), "metric timestamp is a datetime")
check(0.0 <= m.cpu_used_pct <= 100.0 and m.cpu_count == 2, "metric cpu is a percentage of 2 cores")
check(0 < m.mem_used <= m.mem_total and 0 < m.disk_used <= m.disk_total, "metric memory and disk are consistent")
start = info.started_at - datetime.timedelta(seconds=1)
end = now() + datetime.timedelta(seconds=1)
ranged = Sandbox.get_metrics(sbx.sandbox_id, start=start, end=end)
check(len(ranged) >= 1, "Sandbox.get_metrics(id, start, end) returns the samples in range")
check(all(start <= x.timestamp <= end for x in ranged), "every sample lies within [start, end]")
future = sbx.get_metrics(start=now() + datetime.timedelta(hours=1))
check(future == [], "get_metrics(start=in an hour) is empty")

# --- set_timeout ----------------------------------------------------------------------
sbx.set_timeout(600)
check(near(left(sbx.sandbox_id), 600), "set_timeout(600) ends the sandbox 600 s from now")
Sandbox.set_timeout(sbx.sandbox_id, 30)
check(near(left(sbx.sandbox_id), 30), "Sandbox.set_timeout(id, 30) shortens it to 30 s")

# --- connect to a running sandbox -----------------------------------------------------
plain.set_timeout(30)
connected = Sandbox.connect(plain.sandbox_id)
check(connected.sandbox_id == plain.sandbox_id, "Sandbox.connect(id) without a timeout answers")
check(near(left(plain.sandbox_id), 300), "connect(id) renews a running sandbox to E2B's default 300 s")
Sandbox.connect(plain.sandbox_id, timeout=10)
check(near(left(plain.sandbox_id), 300), "connect(id, timeout=10) never shortens a running sandbox")
plain.connect(timeout=900)
check(near(left(plain.sandbox_id), 900), "connect(timeout=900) extends a running sandbox to 900 s")
plain.connect()
check(near(left(plain.sandbox_id), 900), "connect() on the instance keeps the longer end")

# --- pause and resume through connect -------------------------------------------------
check(sbx.pause() is True, "pause() pauses a running sandbox")
check(Sandbox.get_info(sbx.sandbox_id).state == SandboxState.PAUSED, "paused sandbox reports state paused")
check(sbx.pause() is False, "pause() on a paused sandbox returns False (409)")
resumed = Sandbox.connect(sbx.sandbox_id)
check(resumed.sandbox_id == sbx.sandbox_id, "Sandbox.connect(id) resumes a paused sandbox")
check(Sandbox.get_info(sbx.sandbox_id).state == SandboxState.RUNNING, "the resumed sandbox runs")
check(near(left(sbx.sandbox_id), 300), "connect(id) resumes for E2B's default 300 s")
check(Sandbox.pause(sbx.sandbox_id, mode="full", strict=True) is True, "Sandbox.pause(id, mode='full', strict=True)")
paused = Sandbox.list(query=SandboxQuery(state=[SandboxState.PAUSED])).next_items()
check(ids(paused) == [sbx.sandbox_id], "list(state=[paused]) finds only the paused sandbox")
Sandbox.connect(sbx.sandbox_id, timeout=120)
check(near(left(sbx.sandbox_id), 120), "connect(id, timeout=120) resumes for 120 s")
check(others[0].beta_pause() is True, "beta_pause() pauses too")
check(Sandbox.get_info(others[0].sandbox_id).state == SandboxState.PAUSED, "beta_pause() left it paused")
others[0].connect()
check(Sandbox.get_info(others[0].sandbox_id).state == SandboxState.RUNNING, "connect() on the instance resumes")

# --- kill -----------------------------------------------------------------------------
check(plain.kill() is True, "kill() returns True")
check(Sandbox.kill(sbx.sandbox_id) is True, "Sandbox.kill(id) returns True")
check(Sandbox.kill(sbx.sandbox_id) is False, "killing a killed sandbox returns False (404)")
try:
    Sandbox.get_info(sbx.sandbox_id)
    check(False, "get_info of a killed sandbox raises")
except SandboxNotFoundException:
    check(True, "get_info of a killed sandbox raises SandboxNotFoundException")
try:
    Sandbox.connect(sbx.sandbox_id)
    check(False, "connect to a killed sandbox raises")
except SandboxNotFoundException:
    check(True, "connect to a killed sandbox raises SandboxNotFoundException")
for s in others:
    check(s.kill() is True, f"kill {s.sandbox_id}")
check(Sandbox.list().next_items() == [], "list() is empty once every sandbox is killed")
print("python SDK conformance: all calls passed")
