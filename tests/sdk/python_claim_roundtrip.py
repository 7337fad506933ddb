"""A claim's round trip as an application makes it: claim over HTTP, then E2B's official
Python SDK connects to the claimed sandbox, then release.

Run by tests/claims_http.rs with POOLPILOT_URL and POOLPILOT_API_TOKEN pointing at a running
agent (pool `w`), and E2B_API_URL and E2B_API_KEY at the emulator the agent manages. The
claim()/renew()/release() helpers are not written here: they are the Python block of
docs/pools.md, run as is, so the snippet users copy is the one tested. Any failed check exits
non-zero.
"""

import os
import pathlib
import re
import sys
import time
import urllib.error
import uuid

from e2b import Sandbox, SandboxState
from e2b.exceptions import SandboxNotFoundException

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "pools.md"


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def docs_helpers():
    """The claim()/renew()/release() helpers: the first python block under '### Python'."""
    text = DOCS.read_text()
    section = text.split("### Python", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    check(block is not None, "docs/pools.md has a Python client block")
    helpers = {"__name__": "pools_md"}
    exec(compile(block.group(1), f"{DOCS}:python", "exec"), helpers)
    return helpers


h = docs_helpers()
claim, renew, release = h["claim"], h["renew"], h["release"]

key = f"sdk-roundtrip-{uuid.uuid4()}"
c = claim("w", holder="sdk-roundtrip", lease="5m", key=key)
check(c["pool"] == "w" and c["holder"] == "sdk-roundtrip", "claim() answers the claim")
sandbox_id = c["sandbox_id"]
check(claim("w", holder="sdk-roundtrip", lease="5m", key=key)["sandbox_id"] == sandbox_id,
      "the same Idempotency-Key gives the same sandbox")

# The application's side: E2B's SDK, on the id the claim gave.
sbx = Sandbox.connect(sandbox_id)
check(sbx.sandbox_id == sandbox_id, "Sandbox.connect(claimed id) connects to that sandbox")
info = sbx.get_info()
check(info.state == SandboxState.RUNNING, "the claimed sandbox runs")
check(info.metadata.get("poolpilot_pool") == "w", "the claimed sandbox is a member of pool w")

renewed = renew(c["claim_id"], "10m")
check(renewed["expires_at"] > c["expires_at"], "renew() moves the lease's end")

ended = release(c["claim_id"])
check(ended["claim_id"] == c["claim_id"], "release() answers the claim it ended")


def gone():
    try:
        Sandbox.get_info(sandbox_id)
        return False
    except SandboxNotFoundException:
        return True


deadline = time.monotonic() + 20
while not gone():
    check(time.monotonic() < deadline, "the released sandbox is killed within 20 s")
    time.sleep(0.2)
check(True, "the released sandbox is killed (on_release: kill)")

try:
    release(c["claim_id"])
    check(False, "a second release is refused")
except urllib.error.HTTPError as e:
    check(e.code == 404, "a second release answers 404")

print("round trip passed")
