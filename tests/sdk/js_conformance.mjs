// Drives E2B's official JS SDK against a running poolpilot emulator.
//
// Run by tests/sdk_conformance.rs with E2B_API_URL and E2B_API_KEY pointing at the emulator.
// Every call must succeed and return what E2B would; any mismatch exits non-zero.

import { Sandbox } from 'e2b'

const suite = process.env.CONFORMANCE_SUITE ?? 'js'

function check(cond, what) {
  if (!cond) {
    console.error(`FAIL: ${what}`)
    process.exit(1)
  }
  console.log(`ok: ${what}`)
}

async function waitFor(fn, what, limitMs = 15000) {
  const deadline = Date.now() + limitMs
  for (;;) {
    const value = await fn()
    if (value && (!Array.isArray(value) || value.length > 0)) return value
    if (Date.now() > deadline) check(false, `${what} within ${limitMs} ms`)
    await new Promise((r) => setTimeout(r, 200))
  }
}

try {
  const metadata = { suite, owner: 'poolpilot-conformance' }
  const sbx = await Sandbox.create('base', { timeoutMs: 300_000, metadata })
  check(sbx.sandboxId.length > 0, `create returned sandbox ${sbx.sandboxId}`)
  const others = []
  for (let i = 0; i < 4; i++) others.push(await Sandbox.create('base', { timeoutMs: 300_000, metadata }))
  const allIds = new Set([sbx.sandboxId, ...others.map((s) => s.sandboxId)])

  const paginator = Sandbox.list({ query: { metadata }, limit: 2 })
  const seen = []
  let pages = 0
  while (paginator.hasNext) {
    const items = await paginator.nextItems()
    pages++
    seen.push(...items.map((i) => i.sandboxId))
  }
  check(pages === 3, `list paged 5 sandboxes in 3 pages of 2 (got ${pages})`)
  check(seen.length === 5 && seen.every((id) => allIds.has(id)) && new Set(seen).size === 5,
    'list returned each sandbox exactly once')

  const running = await Sandbox.list({ query: { metadata, state: ['running'] } }).nextItems()
  check(running.length === 5, 'list filters by state and metadata')

  const info = await sbx.getInfo()
  check(info.sandboxId === sbx.sandboxId, 'getInfo returns the sandbox')
  check(info.templateId === 'base', 'getInfo template is base')
  check(info.metadata.suite === suite, 'getInfo keeps metadata')
  check(info.cpuCount === 2 && info.memoryMB === 512, 'base has 2 vCPU and 512 MiB')
  check(info.state === 'running', 'getInfo state is running')

  const metrics = await waitFor(() => sbx.getMetrics(), 'getMetrics returns a sample')
  const m = metrics[metrics.length - 1]
  for (const f of ['timestamp', 'cpuCount', 'cpuUsedPct', 'memUsed', 'memTotal', 'memCache', 'diskUsed', 'diskTotal']) {
    check(m[f] !== undefined && m[f] !== null, `metric has ${f}`)
  }
  check(m.timestamp instanceof Date && !isNaN(m.timestamp), 'metric timestamp is a Date')
  check(m.cpuUsedPct >= 0 && m.cpuUsedPct <= 100 && m.cpuCount === 2, 'metric cpu is a percentage of 2 cores')

  const before = (await sbx.getInfo()).endAt
  await sbx.setTimeout(600_000)
  const after = (await sbx.getInfo()).endAt
  check(after > before, `setTimeout moved endAt from ${before.toISOString()} to ${after.toISOString()}`)

  await sbx.pause()
  check((await Sandbox.getInfo(sbx.sandboxId)).state === 'paused', 'paused sandbox reports state paused')
  const resumed = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 120_000 })
  check(resumed.sandboxId === sbx.sandboxId, 'connect resumed the paused sandbox')
  check((await Sandbox.getInfo(sbx.sandboxId)).state === 'running', 'resumed sandbox runs')

  check((await sbx.kill()) === true, 'kill returns true')
  check((await Sandbox.kill(sbx.sandboxId)) === false, 'killing a killed sandbox returns false (404)')
  for (const s of others) await s.kill()
  console.log('js SDK conformance: all calls passed')
} catch (e) {
  console.error('FAIL: unexpected error:', e)
  process.exit(1)
}
