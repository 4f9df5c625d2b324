-- fwdist schema v1. Portable SQL (SQLite and PostgreSQL): times are unix milliseconds,
-- hashes and manifests are BLOBs (bytea on PostgreSQL).

CREATE TABLE tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL,
    role        TEXT    NOT NULL CHECK (role IN ('viewer', 'publisher', 'admin')),
    hash        BLOB    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE devices (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT    NOT NULL UNIQUE,       -- canonical MAC aa:bb:cc:dd:ee:ff
    model        TEXT    NOT NULL,
    labels       TEXT    NOT NULL DEFAULT '[]', -- JSON array of strings
    secret_hash  BLOB    NOT NULL,
    enabled      INTEGER NOT NULL DEFAULT 1,
    created_at   INTEGER NOT NULL
);
CREATE INDEX devices_model ON devices (model, seq);

CREATE TABLE releases (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    model       TEXT    NOT NULL,
    version     TEXT    NOT NULL,
    sequence    INTEGER NOT NULL,
    file        TEXT    NOT NULL,
    size        INTEGER NOT NULL,
    sha256      TEXT    NOT NULL,
    manifest    BLOB    NOT NULL,   -- exact signed bytes
    signature   BLOB    NOT NULL,   -- manifest.json.sig as uploaded
    created_at  INTEGER NOT NULL,
    yanked_at   INTEGER,
    UNIQUE (model, version),
    UNIQUE (model, sequence)
);

CREATE TABLE rollouts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    model       TEXT    NOT NULL,
    version     TEXT    NOT NULL,
    percent_bp  INTEGER NOT NULL CHECK (percent_bp BETWEEN 0 AND 10000), -- basis points
    state       TEXT    NOT NULL CHECK (state IN ('active', 'paused', 'aborted')),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    FOREIGN KEY (model, version) REFERENCES releases (model, version)
);
CREATE INDEX rollouts_model ON rollouts (model, state, id);

CREATE TABLE rollout_devices (
    rollout_id  INTEGER NOT NULL REFERENCES rollouts (id),
    device      TEXT    NOT NULL,
    PRIMARY KEY (rollout_id, device)
);
CREATE INDEX rollout_devices_device ON rollout_devices (device);

CREATE TABLE downloads (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    device       TEXT    NOT NULL,
    model        TEXT    NOT NULL,
    version      TEXT    NOT NULL,
    file         TEXT    NOT NULL,
    start_offset INTEGER NOT NULL,
    bytes        INTEGER NOT NULL,
    size         INTEGER NOT NULL,
    outcome      TEXT    NOT NULL CHECK (outcome IN ('complete', 'aborted')),
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER NOT NULL,
    client_ip    TEXT    NOT NULL,
    data_port    INTEGER,
    node         TEXT    NOT NULL
);
CREATE INDEX downloads_device ON downloads (device, id);
CREATE INDEX downloads_release ON downloads (model, version, id);
