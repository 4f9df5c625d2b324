-- fwdist schema v4 (SQLite): what the admin dashboard reads (issue 13), each kept or indexed
-- so that it stays a bounded read at a million devices and ten million records.

-- When each device last sent an install report, kept with the report (db/reports.rs), so
-- "not reported in N days" is an index range, not a scan of the reports.
ALTER TABLE devices ADD COLUMN last_report_at INTEGER;
UPDATE devices SET last_report_at = (SELECT MAX(at) FROM reports WHERE reports.device = devices.id);
CREATE INDEX devices_last_report ON devices (last_report_at);
-- Devices per model and installed version ('' for none reported yet), kept as devices are
-- registered and deleted and as `installed` reports move a device's version (db/devices.rs,
-- db/reports.rs): the fleet chart reads a few rows, not a million.
CREATE TABLE fleet_versions (
    model    TEXT    NOT NULL,
    version  TEXT    NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (model, version)
);
INSERT INTO fleet_versions (model, version, n)
    SELECT model, IFNULL(installed_version, ''), COUNT(*) FROM devices WHERE true
    GROUP BY model, IFNULL(installed_version, '');

-- Download records (by the hour they finished) and failed install reports per unix hour,
-- kept in the transaction that stores them (db/downloads.rs, db/reports.rs), so the
-- dashboard's 24 h / 7 d charts read at most 168 rows. Backfilled once, here.
CREATE TABLE activity (
    hour            INTEGER PRIMARY KEY,   -- unix ms / 3,600,000
    complete        INTEGER NOT NULL DEFAULT 0,
    aborted         INTEGER NOT NULL DEFAULT 0,
    failed_reports  INTEGER NOT NULL DEFAULT 0
);
INSERT INTO activity (hour, complete, aborted)
    SELECT finished_at / 3600000, SUM(outcome = 'complete'), SUM(outcome = 'aborted')
    FROM downloads WHERE true GROUP BY finished_at / 3600000;
INSERT INTO activity (hour, failed_reports)
    SELECT at / 3600000, COUNT(*) FROM reports WHERE outcome = 'failed' GROUP BY at / 3600000
    ON CONFLICT (hour) DO UPDATE SET failed_reports = excluded.failed_reports;

-- A rollout's per-state counts over time, sampled by the automatic steps
-- (services/samples.rs) when they change, thinning as the rollout ages.
CREATE TABLE rollout_samples (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id   INTEGER NOT NULL,
    at           INTEGER NOT NULL,
    state        TEXT    NOT NULL,
    phase        INTEGER,
    percent_bp   INTEGER NOT NULL,
    pending      INTEGER NOT NULL,
    downloading  INTEGER NOT NULL,
    downloaded   INTEGER NOT NULL,
    installed    INTEGER NOT NULL,
    failed       INTEGER NOT NULL
);
CREATE INDEX rollout_samples_rollout ON rollout_samples (rollout_id, id);
