-- Webhook deliveries a standby received and verified (issue 14), for the leader to take:
-- each event once (E2B's id), taken by the leader in a fenced transaction.
CREATE TABLE webhook_inbox (
    id TEXT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    body TEXT NOT NULL
);
