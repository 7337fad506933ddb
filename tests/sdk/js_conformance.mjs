// Drives E2B's official JS SDK against a running poolpilot emulator.
//
// Run by tests/sdk_conformance.rs with E2B_API_URL and E2B_API_KEY pointing at the emulator.
// Every method is called twice: with its defaults (no options, the common call in the wild)
// and with explicit options; each call's result is checked against what E2B would answer.
// Any mismatch exits non-zero. The SDK has no lifecycle-events API to cover.

import { Sandbox, SandboxNotFoundError } from 'e2b'

const suite = process.env.CONFORMANCE_SUITE ?? 'js'
// Seconds of slack for lifetimes: the emulator follows the wall clock at speed 1.
const SLACK = 5

function check(cond, what) {
  if (!cond) {
    console.error(`FAIL: ${what}`)
    process.exit(1)
  }
  console.log(`ok: ${what}`)
}

const near = (value, want) => Math.abs(value - want) <= SLACK
const ids = (items) => items.map((i) => i.sandboxId)
const sameSet = (a, b) => a.length === b.size && new Set(a).size === a.length && a.every((x) => b.has(x))

/** Seconds until the sandbox's end, as getInfo reports it. */
async function left(sandboxId) {
  return ((await Sandbox.getInfo(sandboxId)).endAt - Date.now()) / 1000
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

async function rejectsNotFound(promise, what) {
  try {
    await promise
    check(false, what)
  } catch (e) {
    check(e instanceof SandboxNotFoundError, `${what} (${e.constructor.name})`)
  }
}

try {
  // --- create ---------------------------------------------------------------------------
  const plain = await Sandbox.create()
  let info = await plain.getInfo()
  check(info.templateId === 'base', 'create() boots the default template, base')
  check(near((info.endAt - info.startedAt) / 1000, 300), "create() lives E2B's default 300 s")
  check(Object.keys(info.metadata).length === 0 && info.state === 'running', 'create() has no metadata and runs')

  const metadata = { suite, owner: 'poolpilot-conformance' }
  const sbx = await Sandbox.create('base', {
    timeoutMs: 120_000,
    metadata,
    envs: { GREETING: 'hello' },
    allowInternetAccess: false,
    lifecycle: { onTimeout: 'pause' },
  })
  info = await sbx.getInfo()
  check(near((info.endAt - info.startedAt) / 1000, 120), "create('base', {timeoutMs: 120000}) lives 120 s")
  check(info.metadata.suite === suite && info.metadata.owner === metadata.owner, 'create keeps the metadata')
  const byOpts = await Sandbox.create({ template: 'base', timeoutMs: 60_000 })
  check(near(await left(byOpts.sandboxId), 60), 'create({template, timeoutMs}) lives 60 s')

  const others = []
  for (let i = 0; i < 4; i++) others.push(await Sandbox.create('base', { timeoutMs: 300_000, metadata }))
  const mine = new Set([sbx.sandboxId, ...ids(others)])
  const everyone = new Set([...mine, plain.sandboxId, byOpts.sandboxId])

  // --- list -----------------------------------------------------------------------------
  let paginator = Sandbox.list()
  const first = await paginator.nextItems()
  check(sameSet(ids(first), everyone), 'list() returns every sandbox on one page')
  check(!paginator.hasNext && !paginator.nextToken, 'list() has no further page')

  paginator = Sandbox.list({ query: { metadata }, limit: 2 })
  const seen = []
  let pages = 0
  let token
  while (paginator.hasNext) {
    seen.push(...ids(await paginator.nextItems()))
    pages++
    if (pages === 1) token = paginator.nextToken
  }
  check(pages === 3, `list({limit: 2}) pages 5 sandboxes in 3 pages (got ${pages})`)
  check(sameSet(seen, mine), 'list({limit: 2}) returns each sandbox exactly once')
  const continued = await Sandbox.list({ query: { metadata }, limit: 2, nextToken: token }).nextItems()
  check(JSON.stringify(ids(continued)) === JSON.stringify(seen.slice(2, 4)), 'list({nextToken}) continues where the first page ended')

  const asc = await Sandbox.list({
    query: {
      metadata,
      state: ['running', 'paused'],
      template: 'base',
      startedAfter: new Date(info.startedAt.getTime() - 1000),
    },
    limit: 100,
    order: 'asc',
  }).nextItems()
  check(asc.length === 5, 'list filters by metadata, both states, template and startedAfter')
  check(asc.every((s, i) => i === 0 || asc[i - 1].startedAt <= s.startedAt), "list({order: 'asc'}) sorts oldest first")
  check((await Sandbox.list({ query: { template: 'nope' } }).nextItems()).length === 0, 'list by an unknown template is empty')

  // --- getInfo --------------------------------------------------------------------------
  info = await sbx.getInfo()
  check(info.sandboxId === sbx.sandboxId && info.templateId === 'base', 'getInfo() returns the sandbox')
  check(info.cpuCount === 2 && info.memoryMB === 512, 'base has 2 vCPU and 512 MiB')
  const same = await Sandbox.getInfo(sbx.sandboxId)
  check(same.sandboxId === info.sandboxId && same.metadata.suite === suite, 'Sandbox.getInfo(id) returns the same')

  // --- getMetrics -----------------------------------------------------------------------
  const metrics = await waitFor(() => sbx.getMetrics(), 'getMetrics() returns a sample')
  const m = metrics[metrics.length - 1]
  for (const f of ['timestamp', 'cpuCount', 'cpuUsedPct', 'memUsed', 'memTotal', 'memCache', 'diskUsed', 'diskTotal']) {
    check(m[f] !== undefined && m[f] !== null, `metric has ${f}`)
  }
  check(m.timestamp instanceof Date && !isNaN(m.timestamp), 'metric timestamp is a Date')
  check(m.cpuUsedPct >= 0 && m.cpuUsedPct <= 100 && m.cpuCount === 2, 'metric cpu is a percentage of 2 cores')
  check(m.memUsed > 0 && m.memUsed <= m.memTotal && m.diskUsed > 0 && m.diskUsed <= m.diskTotal, 'metric memory and disk are consistent')
  const start = new Date(info.startedAt.getTime() - 1000)
  const end = new Date(Date.now() + 1000)
  const ranged = await Sandbox.getMetrics(sbx.sandboxId, { start, end })
  check(ranged.length >= 1, 'Sandbox.getMetrics(id, {start, end}) returns the samples in range')
  check(ranged.every((x) => x.timestamp >= new Date(start.getTime() - 1000) && x.timestamp <= end), 'every sample lies within [start, end]')
  const future = await sbx.getMetrics({ start: new Date(Date.now() + 3_600_000) })
  check(future.length === 0, 'getMetrics({start: in an hour}) is empty')

  // --- setTimeout -----------------------------------------------------------------------
  await sbx.setTimeout(600_000)
  check(near(await left(sbx.sandboxId), 600), 'setTimeout(600000) ends the sandbox 600 s from now')
  await Sandbox.setTimeout(sbx.sandboxId, 30_000)
  check(near(await left(sbx.sandboxId), 30), 'Sandbox.setTimeout(id, 30000) shortens it to 30 s')

  // --- connect to a running sandbox -----------------------------------------------------
  await plain.setTimeout(30_000)
  const connected = await Sandbox.connect(plain.sandboxId)
  check(connected.sandboxId === plain.sandboxId, 'Sandbox.connect(id) without a timeout answers')
  check(near(await left(plain.sandboxId), 300), "connect(id) renews a running sandbox to E2B's default 300 s")
  await Sandbox.connect(plain.sandboxId, { timeoutMs: 10_000 })
  check(near(await left(plain.sandboxId), 300), 'connect(id, {timeoutMs: 10000}) never shortens a running sandbox')
  await plain.connect({ timeoutMs: 900_000 })
  check(near(await left(plain.sandboxId), 900), 'connect({timeoutMs: 900000}) extends a running sandbox to 900 s')
  await plain.connect()
  check(near(await left(plain.sandboxId), 900), 'connect() on the instance keeps the longer end')

  // --- pause and resume through connect -------------------------------------------------
  check((await sbx.pause()) === true, 'pause() pauses a running sandbox')
  check((await Sandbox.getInfo(sbx.sandboxId)).state === 'paused', 'paused sandbox reports state paused')
  check((await sbx.pause()) === false, 'pause() on a paused sandbox returns false (409)')
  const resumed = await Sandbox.connect(sbx.sandboxId)
  check(resumed.sandboxId === sbx.sandboxId, 'Sandbox.connect(id) resumes a paused sandbox')
  check((await Sandbox.getInfo(sbx.sandboxId)).state === 'running', 'the resumed sandbox runs')
  check(near(await left(sbx.sandboxId), 300), "connect(id) resumes for E2B's default 300 s")
  check((await Sandbox.pause(sbx.sandboxId, { keepMemory: true })) === true, 'Sandbox.pause(id, {keepMemory: true})')
  const paused = await Sandbox.list({ query: { state: ['paused'] } }).nextItems()
  check(JSON.stringify(ids(paused)) === JSON.stringify([sbx.sandboxId]), "list({state: ['paused']}) finds only the paused sandbox")
  await Sandbox.connect(sbx.sandboxId, { timeoutMs: 120_000 })
  check(near(await left(sbx.sandboxId), 120), 'connect(id, {timeoutMs: 120000}) resumes for 120 s')
  check((await others[0].betaPause()) === true, 'betaPause() pauses too')
  check((await Sandbox.getInfo(others[0].sandboxId)).state === 'paused', 'betaPause() left it paused')
  await others[0].connect()
  check((await Sandbox.getInfo(others[0].sandboxId)).state === 'running', 'connect() on the instance resumes')

  // --- kill -----------------------------------------------------------------------------
  check((await plain.kill()) === true, 'kill() returns true')
  check((await Sandbox.kill(sbx.sandboxId)) === true, 'Sandbox.kill(id) returns true')
  check((await Sandbox.kill(sbx.sandboxId)) === false, 'killing a killed sandbox returns false (404)')
  await rejectsNotFound(Sandbox.getInfo(sbx.sandboxId), 'getInfo of a killed sandbox throws SandboxNotFoundError')
  await rejectsNotFound(Sandbox.connect(sbx.sandboxId), 'connect to a killed sandbox throws SandboxNotFoundError')
  for (const s of [...others, byOpts]) check((await s.kill()) === true, `kill ${s.sandboxId}`)
  check((await Sandbox.list().nextItems()).length === 0, 'list() is empty once every sandbox is killed')
  console.log('js SDK conformance: all calls passed')
} catch (e) {
  console.error('FAIL: unexpected error:', e)
  process.exit(1)
}
