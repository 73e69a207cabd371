-- latentsweep store, first schema. Times are unix milliseconds (UTC).

CREATE TABLE sweeps (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    spec_toml   TEXT    NOT NULL,               -- text of the last submitted file
    source_path TEXT,
    priority    INTEGER NOT NULL DEFAULT 0,     -- higher runs first; ties in submission order
    state       TEXT    NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'paused')),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY,
    sweep_id     INTEGER NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
    key          TEXT    NOT NULL,              -- stable cell key (hash of resolved params)
    params_json  TEXT    NOT NULL,
    seq          INTEGER NOT NULL,              -- expansion order within the sweep
    state        TEXT    NOT NULL DEFAULT 'queued'
                 CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 3,
    last_error   TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    UNIQUE (sweep_id, key)
);
CREATE INDEX jobs_by_state ON jobs (state, sweep_id, seq);

CREATE TABLE workers (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL,
    host          TEXT    NOT NULL,
    backend       TEXT    NOT NULL,
    devices_json  TEXT    NOT NULL DEFAULT '[]',
    version       TEXT    NOT NULL,
    registered_at INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL
);

CREATE TABLE attempts (
    id               INTEGER PRIMARY KEY,
    job_id           INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    number           INTEGER NOT NULL,          -- 1-based within the job
    worker_id        INTEGER REFERENCES workers(id),
    state            TEXT    NOT NULL DEFAULT 'running'
                     CHECK (state IN ('running', 'done', 'failed', 'expired', 'cancelled', 'released')),
    lease_expires_at INTEGER NOT NULL,
    started_at       INTEGER NOT NULL,
    ended_at         INTEGER,
    error            TEXT,
    last_seq         INTEGER NOT NULL DEFAULT -1, -- highest metric batch sequence stored
    UNIQUE (job_id, number)
);
CREATE INDEX attempts_running ON attempts (state, lease_expires_at);

-- One row per accepted metric batch: makes (attempt, seq) delivery exactly-once.
CREATE TABLE metric_batches (
    attempt_id  INTEGER NOT NULL REFERENCES attempts(id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    points      INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (attempt_id, seq)
) WITHOUT ROWID;

CREATE TABLE metrics (
    job_id     INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    attempt_id INTEGER NOT NULL REFERENCES attempts(id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    step       INTEGER NOT NULL,
    epoch      INTEGER NOT NULL,
    name       TEXT    NOT NULL,
    value      REAL    NOT NULL,
    time       INTEGER NOT NULL
);
CREATE INDEX metrics_by_job ON metrics (job_id, name, step);

-- 2-D embedding of a fixed test subset: points are little-endian f32 (x, y) pairs,
-- labels little-endian u32, indices little-endian u32 positions in the test split.
CREATE TABLE snapshots (
    id         INTEGER PRIMARY KEY,
    job_id     INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    attempt_id INTEGER NOT NULL REFERENCES attempts(id) ON DELETE CASCADE,
    epoch      INTEGER NOT NULL,
    projected  INTEGER NOT NULL DEFAULT 0,     -- 1 when a PCA projection of D > 2
    n          INTEGER NOT NULL,
    points     BLOB    NOT NULL,
    labels     BLOB    NOT NULL,
    indices    BLOB    NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (attempt_id, epoch)
);

CREATE TABLE results (
    job_id       INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
    attempt_id   INTEGER NOT NULL REFERENCES attempts(id),
    metrics_json TEXT    NOT NULL,
    finished_at  INTEGER NOT NULL
);

CREATE TABLE artifacts (
    id         INTEGER PRIMARY KEY,
    job_id     INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    attempt_id INTEGER NOT NULL REFERENCES attempts(id) ON DELETE CASCADE,
    kind       TEXT    NOT NULL DEFAULT 'checkpoint',
    epoch      INTEGER NOT NULL,
    path       TEXT    NOT NULL,
    size       INTEGER NOT NULL,
    sha256     TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX artifacts_by_job ON artifacts (job_id, epoch);
