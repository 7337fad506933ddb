"""Drives E2B's official Python SDK against a running poolpilot emulator.

Run by tests/sdk_conformance.rs with E2B_API_URL and E2B_API_KEY pointing at the emulator.
Every call must succeed and return what E2B would; any mismatch exits non-zero.
"""

import datetime
import os
import sys
import time

from e2b import Sandbox, SandboxQuery, SandboxState

SUITE = os.environ.get("CONFORMANCE_SUITE", "py")


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


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


meta = {"suite": SUITE, "owner": "poolpilot-conformance"}
sbx = Sandbox.create(template="base", timeout=300, metadata=meta)
check(len(sbx.sandbox_id) > 0, f"create returned sandbox {sbx.sandbox_id}")

others = [Sandbox.create(template="base", timeout=300, metadata=meta) for _ in range(4)]
all_ids = {sbx.sandbox_id} | {s.sandbox_id for s in others}

# list across pages: 5 sandboxes, 2 per page -> 3 pages
paginator = Sandbox.list(query=SandboxQuery(metadata=meta), limit=2)
seen, pages = [], 0
while paginator.has_next:
    items = paginator.next_items()
    pages += 1
    seen.extend(i.sandbox_id for i in items)
check(pages == 3, f"list paged 5 sandboxes in 3 pages of 2 (got {pages})")
check(set(seen) == all_ids and len(seen) == 5, "list returned each sandbox exactly once")

running = Sandbox.list(query=SandboxQuery(metadata=meta, state=[SandboxState.RUNNING])).next_items()
check(len(running) == 5, "list filters by state and metadata")

info = sbx.get_info()
check(info.sandbox_id == sbx.sandbox_id, "get_info returns the sandbox")
check(info.template_id == "base", "get_info template is base")
check(info.metadata == meta, "get_info keeps metadata")
check(info.cpu_count == 2 and info.memory_mb == 512, "base has 2 vCPU and 512 MiB")
check(info.state == SandboxState.RUNNING, "get_info state is running")

metrics = wait_for(lambda: sbx.get_metrics(), "get_metrics returns a sample")
m = metrics[-1]
for field in ("timestamp", "cpu_count", "cpu_used_pct", "mem_used", "mem_total", "mem_cache", "disk_used", "disk_total"):
    check(getattr(m, field, None) is not None, f"metric has {field}")
check(isinstance(m.timestamp, datetime.datetime), "metric timestamp is a datetime")
check(0.0 <= m.cpu_used_pct <= 100.0 and m.cpu_count == 2, "metric cpu is a percentage of 2 cores")
check(0 < m.mem_used <= m.mem_total and 0 < m.disk_used <= m.disk_total, "metric memory and disk are consistent")

before = sbx.get_info().end_at
sbx.set_timeout(600)
after = sbx.get_info().end_at
check(after > before, f"set_timeout moved end_at from {before} to {after}")

sbx.pause()
check(Sandbox.get_info(sbx.sandbox_id).state == SandboxState.PAUSED, "paused sandbox reports state paused")

resumed = Sandbox.connect(sbx.sandbox_id, timeout=120)
check(resumed.sandbox_id == sbx.sandbox_id, "connect resumed the paused sandbox")
check(Sandbox.get_info(sbx.sandbox_id).state == SandboxState.RUNNING, "resumed sandbox runs")

check(sbx.kill() is True, "kill returns True")
check(Sandbox.kill(sbx.sandbox_id) is False, "killing a killed sandbox returns False (404)")
for s in others:
    check(s.kill() is True, f"kill {s.sandbox_id}")
print("python SDK conformance: all calls passed")
