-- The history (issue 12): what the agent saw and did, for the read API, the status page and
-- `poolpilot events report`. One schema for SQLite (the default) and PostgreSQL (HA): only
-- TEXT, BIGINT and DOUBLE PRECISION columns, no engine-specific types or defaults. Times are
-- milliseconds since the Unix epoch, UTC. Bodies are the JSON the API shows.

-- Lifecycle events, from webhooks and the events API, each once (E2B's event id).
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    sandbox_id TEXT NOT NULL,
    pool TEXT,
    template_id TEXT,
    type TEXT NOT NULL,
    source TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX events_at ON events (at_ms, id);
CREATE INDEX events_sandbox ON events (sandbox_id, at_ms);
CREATE INDEX events_pool ON events (pool, at_ms);

-- Decisions with their causes and outcomes; `seq` counts within one run of the agent.
CREATE TABLE decisions (
    run_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    rule TEXT NOT NULL,
    kind TEXT NOT NULL,
    result TEXT NOT NULL,
    summary TEXT NOT NULL,
    outcome TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX decisions_at ON decisions (at_ms);
CREATE INDEX decisions_rule ON decisions (rule, at_ms);

-- Which sandboxes a decision created or touched, for a sandbox's timeline.
CREATE TABLE decision_sandboxes (
    sandbox_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (sandbox_id, run_id, seq)
);
CREATE INDEX decision_sandboxes_at ON decision_sandboxes (at_ms);

-- Alert episodes: one row from firing to resolved (resolved_ms NULL while firing).
CREATE TABLE alerts (
    alert TEXT NOT NULL,
    subject TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    resolved_ms BIGINT,
    severity TEXT NOT NULL,
    message TEXT NOT NULL,
    labels TEXT NOT NULL,
    PRIMARY KEY (alert, subject, started_ms)
);
CREATE INDEX alerts_started ON alerts (started_ms);

-- Claims, from grant to end (ended_ms NULL while held).
CREATE TABLE claims (
    claim_id TEXT PRIMARY KEY,
    pool TEXT NOT NULL,
    sandbox_id TEXT NOT NULL,
    holder TEXT NOT NULL,
    claimed_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    ended_ms BIGINT,
    end_reason TEXT
);
CREATE INDEX claims_sandbox ON claims (sandbox_id, claimed_ms);
CREATE INDEX claims_claimed ON claims (claimed_ms);

-- Pool sizes and demand over time; thinned to one row per 5 minutes after 6 hours.
CREATE TABLE pool_samples (
    pool TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    desired BIGINT,
    actual BIGINT NOT NULL,
    pending BIGINT NOT NULL,
    min_size BIGINT,
    max_size BIGINT,
    claimed BIGINT NOT NULL,
    idle BIGINT NOT NULL,
    paused BIGINT NOT NULL,
    waiting BIGINT NOT NULL,
    busy_cores DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (pool, at_ms)
);

-- Members' metric samples (CPU, memory, disk), kept for a shorter time than the rest.
CREATE TABLE sandbox_samples (
    sandbox_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    pool TEXT,
    cpu_pct DOUBLE PRECISION NOT NULL,
    cpu_count BIGINT NOT NULL,
    mem_used BIGINT NOT NULL,
    mem_total BIGINT NOT NULL,
    disk_used BIGINT NOT NULL,
    disk_total BIGINT NOT NULL,
    PRIMARY KEY (sandbox_id, at_ms)
);
CREATE INDEX sandbox_samples_at ON sandbox_samples (at_ms);
