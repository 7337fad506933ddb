-- High availability (issue 14): the leader's lease, the state every replica resumes from,
-- and the ids of events acted on. The same tables on SQLite, where the one agent always leads.

-- One row per lease: who holds it, until when (the database's clock, ms since the epoch),
-- and its generation, the fencing token every write and create of the leader carries.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    generation BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);

-- What the leader saved after its last turn (engine state, events cursor, creates in
-- flight), as JSON, with the generation that wrote it.
CREATE TABLE agent_state (
    name TEXT PRIMARY KEY,
    generation BIGINT NOT NULL,
    body TEXT NOT NULL,
    saved_ms BIGINT NOT NULL
);

-- The ids of the events acted on, written before acting: a new leader skips them.
CREATE TABLE seen_events (
    id TEXT PRIMARY KEY,
    at_ms BIGINT NOT NULL
);
CREATE INDEX seen_events_at ON seen_events (at_ms);
