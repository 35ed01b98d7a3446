-- takgate store schema, version 1 (SQLite, WAL). Applied by the store at start
-- (src/store/mod.rs): every statement is idempotent; the migrations to later versions
-- follow it there, and the version is recorded in PRAGMA user_version (a store written
-- by a newer takgate is refused rather than guessed at).
PRAGMA foreign_keys = ON;

-- Federation peers: from the config file (source 'config', reconciled at start), the admin
-- API (source 'api'), or first seen connecting to a listener (source 'inbound').
CREATE TABLE IF NOT EXISTS federation_servers (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    description     TEXT NOT NULL DEFAULT '',
    -- Inbound federates: their certificate fingerprint (how a returning federate is known).
    node_id         TEXT,
    address         TEXT NOT NULL DEFAULT '',
    port            INTEGER NOT NULL DEFAULT 0 CHECK (port BETWEEN 0 AND 65535),
    direction       TEXT NOT NULL CHECK (direction IN ('outbound', 'inbound')),
    protocol        TEXT NOT NULL CHECK (protocol IN ('v1', 'v2')),
    transport       TEXT NOT NULL DEFAULT 'tls' CHECK (transport IN ('tls')),
    ca_path         TEXT,
    cert_path       TEXT,
    key_path        TEXT,
    verify_ssl      INTEGER NOT NULL DEFAULT 1,
    enabled         INTEGER NOT NULL DEFAULT 1,
    status          TEXT NOT NULL DEFAULT 'disconnected',
    last_connected  TEXT,
    last_error      TEXT,
    sync_missions   INTEGER NOT NULL DEFAULT 1,
    sync_cot        INTEGER NOT NULL DEFAULT 1,
    -- JSON array of wildcard patterns; NULL: every mission; []: none.
    mission_filter  TEXT,
    -- The configured link it belongs to.
    link            TEXT NOT NULL DEFAULT '',
    source          TEXT NOT NULL DEFAULT 'api' CHECK (source IN ('config', 'api', 'inbound')),
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE IF NOT EXISTS missions (
    name            TEXT PRIMARY KEY,
    guid            TEXT NOT NULL DEFAULT '',
    description     TEXT NOT NULL DEFAULT '',
    creator_uid     TEXT NOT NULL DEFAULT '',
    tool            TEXT NOT NULL DEFAULT 'public',
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    deleted_at      TEXT
);

-- CoT items (uids) in a mission.
CREATE TABLE IF NOT EXISTS mission_items (
    mission_name    TEXT NOT NULL,
    uid             TEXT NOT NULL,
    added_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (mission_name, uid)
);

CREATE TABLE IF NOT EXISTS mission_changes (
    id                  INTEGER PRIMARY KEY,
    mission_name        TEXT NOT NULL,
    change_type         TEXT NOT NULL CHECK (change_type IN (
                            'CREATE_MISSION', 'DELETE_MISSION', 'ADD_CONTENT', 'REMOVE_CONTENT',
                            'CREATE_DATA_FEED', 'DELETE_DATA_FEED', 'CHANGE')),
    -- '' rather than NULL, so the uniqueness below holds (NULLs are all distinct in SQLite).
    content_uid         TEXT NOT NULL DEFAULT '',
    content_hash        TEXT NOT NULL DEFAULT '',
    creator_uid         TEXT NOT NULL DEFAULT '',
    -- When the change happened (ms since the epoch), as the origin stamped it.
    ts_ms               INTEGER NOT NULL,
    received_at         TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    is_federated_change INTEGER NOT NULL DEFAULT 0,
    origin_federate     TEXT,
    -- The CoT event the change is about (XML), sent with ADD_CONTENT as TAK Server does.
    cot_xml             TEXT NOT NULL DEFAULT '',
    -- Each change is recorded once.
    UNIQUE (mission_name, change_type, content_uid, content_hash, ts_ms)
);
CREATE INDEX IF NOT EXISTS mission_changes_by_mission ON mission_changes (mission_name, id);

-- What each federate still has to receive, in order (per mission, and overall).
CREATE TABLE IF NOT EXISTS outbound_queue (
    id              INTEGER PRIMARY KEY,
    server_id       INTEGER NOT NULL REFERENCES federation_servers (id) ON DELETE CASCADE,
    change_id       INTEGER NOT NULL REFERENCES mission_changes (id) ON DELETE CASCADE,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    delivered_at    TEXT,
    UNIQUE (server_id, change_id)
);
CREATE INDEX IF NOT EXISTS outbound_pending ON outbound_queue (server_id, delivered_at, id);

