-- Claims shared by replicas (issue 14): the active claims and the released members still
-- to be killed, written by the leader (fenced by its generation) before a holder hears of a
-- change, and read back by each new leader. At most one claim per sandbox: the store itself
-- refuses a second.
CREATE TABLE live_claims (
    claim_id TEXT PRIMARY KEY,
    sandbox_id TEXT NOT NULL UNIQUE,
    pool TEXT NOT NULL,
    expires_ms BIGINT NOT NULL,
    -- The claim as the API shows it (JSON).
    body TEXT NOT NULL
);

-- Released members to be killed whose kill has not been seen to succeed: never handed out.
CREATE TABLE dirty_members (
    sandbox_id TEXT PRIMARY KEY,
    pool TEXT NOT NULL
);

-- Where the leader serves its API, so a standby forwards claims to it.
ALTER TABLE leases ADD COLUMN address TEXT;
