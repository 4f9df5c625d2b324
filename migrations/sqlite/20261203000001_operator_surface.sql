-- fwdist schema v3 (SQLite): device pins (SPEC 9) and when a token was last used (tokens
-- are revoked by deleting their row). Device deletion removes the row (records and reports
-- keep the id as text, so they stay), so devices need no new column.

CREATE TABLE pins (
    device      TEXT    PRIMARY KEY,      -- canonical MAC
    model       TEXT    NOT NULL,
    version     TEXT    NOT NULL,
    reason      TEXT    NOT NULL DEFAULT '',
    expires_at  INTEGER,                  -- unix ms; NULL: until removed
    set_by      TEXT    NOT NULL,
    set_at      INTEGER NOT NULL,
    FOREIGN KEY (model, version) REFERENCES releases (model, version)
);

-- When a token last authorised a request (written at most once a minute per token).
ALTER TABLE tokens ADD COLUMN last_used_at INTEGER;
