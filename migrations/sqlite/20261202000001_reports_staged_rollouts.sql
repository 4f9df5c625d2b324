-- fwdist schema v2 (SQLite): install reports (SPEC 7), staged rollouts with per-device state
-- kept as records and reports arrive (SPEC 8), label cohorts, the audit log's table (SPEC 10)
-- and the reporter role (SPEC 6).

-- The reporter role: SQLite cannot change a CHECK, so the table is rebuilt (nothing
-- references it).
CREATE TABLE tokens_v2 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL,
    role        TEXT    NOT NULL CHECK (role IN ('viewer', 'publisher', 'admin', 'reporter')),
    hash        BLOB    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);
INSERT INTO tokens_v2 (id, name, role, hash, created_at)
    SELECT id, name, role, hash, created_at FROM tokens;
DROP TABLE tokens;
ALTER TABLE tokens_v2 RENAME TO tokens;

CREATE TABLE reports (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    device      TEXT    NOT NULL,
    model       TEXT    NOT NULL,
    version     TEXT    NOT NULL,
    outcome     TEXT    NOT NULL CHECK (outcome IN ('installed', 'failed')),
    detail      TEXT,
    at          INTEGER NOT NULL,
    source      TEXT    NOT NULL CHECK (source IN ('ftps', 'api')),
    client_ip   TEXT    NOT NULL,
    node        TEXT    NOT NULL
);
CREATE INDEX reports_device ON reports (device, id);
CREATE INDEX reports_release ON reports (model, version, id);

-- The version of the device's latest `installed` report.
ALTER TABLE devices ADD COLUMN installed_version TEXT;

-- Staged rollouts. `state` stays active/paused/aborted: a rollout is `scheduled` while it is
-- active and `start_at` is still ahead. Thresholds are parts per million of the selected
-- devices; `phases` is a JSON array of basis points (NULL: a v1 rollout).
ALTER TABLE rollouts ADD COLUMN labels TEXT NOT NULL DEFAULT '[]';
ALTER TABLE rollouts ADD COLUMN phases TEXT;
ALTER TABLE rollouts ADD COLUMN phase INTEGER;
ALTER TABLE rollouts ADD COLUMN phase_opened_at INTEGER;
ALTER TABLE rollouts ADD COLUMN success_ppm INTEGER NOT NULL DEFAULT 500000;
ALTER TABLE rollouts ADD COLUMN failure_ppm INTEGER NOT NULL DEFAULT 100000;
ALTER TABLE rollouts ADD COLUMN min_phase_secs INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollouts ADD COLUMN start_at INTEGER;
ALTER TABLE rollouts ADD COLUMN paused_reason TEXT;
-- 0 until the rollout's members below exist: rollouts made before v2 get them at the next
-- start (the stable hash is computed by the server, not in SQL).
ALTER TABLE rollouts ADD COLUMN members_ready INTEGER NOT NULL DEFAULT 0;

-- Every device a rollout may select: its eligible devices (model and labels) and its listed
-- ones (bucket -1: always selected). `bucket` is the stable hash of (rollout, device),
-- 0..9999; the device is selected while bucket < the rollout's percent (basis points).
CREATE TABLE rollout_members (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id        INTEGER NOT NULL REFERENCES rollouts (id),
    device            TEXT    NOT NULL,
    bucket            INTEGER NOT NULL,
    state             TEXT    NOT NULL
        CHECK (state IN ('pending', 'downloading', 'downloaded', 'installed', 'failed')),
    started           INTEGER NOT NULL DEFAULT 0,  -- fetched image bytes (v1 status)
    completed         INTEGER NOT NULL DEFAULT 0,  -- has a complete image download (v1 status)
    last_download_id  INTEGER,
    last_report_id    INTEGER,
    UNIQUE (rollout_id, device)
);
CREATE INDEX rollout_members_device ON rollout_members (device, rollout_id);
CREATE INDEX rollout_members_state ON rollout_members (rollout_id, state, id);

-- Counts kept as states change, never computed from the fleet: per bucket (so a new percent
-- is one sum over at most 10,001 buckets) and for the rollout's current selection.
-- `key` is a member state, or `started` / `completed`.
CREATE TABLE rollout_counts (
    rollout_id  INTEGER NOT NULL,
    bucket      INTEGER NOT NULL,
    key         TEXT    NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (rollout_id, bucket, key)
);
CREATE TABLE rollout_totals (
    rollout_id  INTEGER NOT NULL,
    key         TEXT    NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (rollout_id, key)
);

CREATE TABLE audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    target  TEXT    NOT NULL,
    detail  TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_action ON audit (action, id);
