-- fwdist schema v3 (PostgreSQL), as migrations/sqlite/20261203000001_operator_surface.sql:
-- device pins (SPEC 9) and when a token was last used.

CREATE TABLE pins (
    device      TEXT    PRIMARY KEY,      -- canonical MAC
    model       TEXT    NOT NULL,
    version     TEXT    NOT NULL,
    reason      TEXT    NOT NULL DEFAULT '',
    expires_at  BIGINT,                   -- unix ms; NULL: until removed
    set_by      TEXT    NOT NULL,
    set_at      BIGINT  NOT NULL,
    FOREIGN KEY (model, version) REFERENCES releases (model, version)
);

ALTER TABLE tokens ADD COLUMN last_used_at BIGINT;
