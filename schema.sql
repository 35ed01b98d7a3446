-- takgate store schema (SQLite, WAL). Versioned and idempotent: the store applies it at
-- start and records the version in PRAGMA user_version. Not applied by any code yet: the
-- store (missions and durable outbound queue) is the next step after federation.
PRAGMA journal_mode = WAL;
PRAGMA foreign_keys = ON;

-- Federation peers, from the config file or the admin API.
CREATE TABLE IF NOT EXISTS federation_servers (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    description     TEXT NOT NULL DEFAULT '',
    node_id         TEXT,
    address         TEXT NOT NULL,
    port            INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    direction       TEXT NOT NULL CHECK (direction IN ('outbound', 'inbound', 'both')),
    protocol        TEXT NOT NULL CHECK (protocol IN ('v1', 'v2')),
    transport       TEXT NOT NULL DEFAULT 'tls' CHECK (transport IN ('tls', 'tcp')),
    ca_path         TEXT,
    cert_path       TEXT,
    key_path        TEXT,
    verify_ssl      INTEGER NOT NULL DEFAULT 1,
    enabled         INTEGER NOT NULL DEFAULT 1,
    status          TEXT NOT NULL DEFAULT 'disconnected',
    last_connected  TEXT,
    last_error      TEXT,
    sync_missions   INTEGER NOT NULL DEFAULT 1,
    sync_cot        INTEGER NOT NULL DEFAULT 0,
    -- JSON array of wildcard patterns; NULL: every mission; []: none.
    mission_filter  TEXT,
    source          TEXT NOT NULL DEFAULT 'api' CHECK (source IN ('config', 'api')),
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE IF NOT EXISTS missions (
    name            TEXT PRIMARY KEY,
    guid            TEXT UNIQUE,
    description     TEXT NOT NULL DEFAULT '',
    creator_uid     TEXT,
    tool            TEXT NOT NULL DEFAULT 'public',
    created_at      TEXT NOT NULL,
    deleted_at      TEXT
);

CREATE TABLE IF NOT EXISTS mission_changes (
    id                  INTEGER PRIMARY KEY,
    mission_name        TEXT NOT NULL,
    change_type         TEXT NOT NULL CHECK (change_type IN (
                            'CREATE_MISSION', 'DELETE_MISSION', 'ADD_CONTENT', 'REMOVE_CONTENT',
                            'CHANGE', 'KEYWORD', 'METADATA', 'EXTERNAL_DATA', 'LOG', 'ROLE', 'INVITE')),
    content_uid         TEXT,
    content_hash        TEXT,
    creator_uid         TEXT,
    timestamp           TEXT NOT NULL,
    received_at         TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    is_federated_change INTEGER NOT NULL DEFAULT 0,
    origin_federate     TEXT,
    -- The change as announced (t-x-m-c detail or ROL program), for replay.
    body                TEXT NOT NULL DEFAULT '',
    -- Each change is recorded once.
    UNIQUE (mission_name, change_type, content_uid, content_hash, timestamp)
);
CREATE INDEX IF NOT EXISTS mission_changes_by_mission ON mission_changes (mission_name, id);

-- What each federate still has to receive, in order per mission.
CREATE TABLE IF NOT EXISTS outbound_queue (
    id              INTEGER PRIMARY KEY,
    server_id       INTEGER NOT NULL REFERENCES federation_servers (id) ON DELETE CASCADE,
    change_id       INTEGER NOT NULL REFERENCES mission_changes (id) ON DELETE CASCADE,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    last_error      TEXT,
    delivered_at    TEXT,
    UNIQUE (server_id, change_id)
);
CREATE INDEX IF NOT EXISTS outbound_pending ON outbound_queue (server_id, delivered_at, next_attempt_at);

PRAGMA user_version = 1;
