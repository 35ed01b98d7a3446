//! What the store holds, as types: federation servers (with their direction, protocol,
//! source and status as enums), missions, mission changes (with their type as an enum),
//! queue items and queue totals. The enums are stored as the text OpenTAKServer and TAK
//! use, and read back strictly.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::Serialize;

/// An enum stored as one of a fixed set of words.
macro_rules! words {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $w:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $w)] $v,)*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v),*];
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $w,)*
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<$name, String> {
                match s {
                    $($w => Ok($name::$v),)*
                    _ => Err(format!("{s:?} is not one of {}", [$($w),*].join(", "))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(v: ValueRef<'_>) -> FromSqlResult<$name> {
                v.as_str()?.parse().map_err(|e: String| FromSqlError::Other(e.into()))
            }
        }
    };
}

words! {
    /// Who dials whom.
    #[derive(Default)]
    Direction {
        /// We connect to it.
        #[default]
        Outbound = "outbound",
        /// It connects to one of our listeners.
        Inbound = "inbound",
    }
}

words! {
    /// The federation protocol.
    #[derive(Default)]
    Protocol {
        /// Port 9000: length-prefixed FederatedEvents (no missions).
        V1 = "v1",
        /// Port 9001: gRPC, missions as ROL.
        #[default]
        V2 = "v2",
    }
}

words! {
    /// Where a server row came from.
    #[derive(Default)]
    Source {
        /// An outgoing federation link of the configuration file.
        Config = "config",
        /// Added through the admin API.
        #[default]
        Api = "api",
        /// A federate that connected to a listener.
        Inbound = "inbound",
    }
}

words! {
    /// The stored status of a server (the running link's own state is fresher).
    #[derive(Default)]
    ServerStatus {
        Connected = "connected",
        #[default]
        Disconnected = "disconnected",
    }
}

words! {
    /// A mission change, as TAK Server's `MissionChangeType` names it.
    ChangeType {
        CreateMission = "CREATE_MISSION",
        DeleteMission = "DELETE_MISSION",
        AddContent = "ADD_CONTENT",
        RemoveContent = "REMOVE_CONTENT",
        CreateDataFeed = "CREATE_DATA_FEED",
        DeleteDataFeed = "DELETE_DATA_FEED",
        /// A mission log entry added or edited (TAK's MissionUpdateDetailsForLogEntry type).
        AddUpdateLogEntry = "ADD_UPDATE_LOG_ENTRY",
        DeleteLogEntry = "DELETE_LOG_ENTRY",
        /// A ROL takgate does not model (mission hierarchy, map and mission layers, external
        /// data, data feeds), kept as received and relayed as it came (its program in
        /// `cot_xml`).
        Relayed = "ROL",
    }
}

impl ChangeType {
    /// Deletions only apply with `allow_federated_delete` (TAK: allowFederatedDelete).
    pub fn is_delete(self) -> bool {
        matches!(self, ChangeType::DeleteMission | ChangeType::RemoveContent | ChangeType::DeleteDataFeed)
    }
}

/// One recorded mission change: one content item (a CoT uid or a file hash) per change, as
/// TAK Server records them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub id: i64,
    pub mission: String,
    pub change_type: ChangeType,
    pub content_uid: String,
    pub content_hash: String,
    pub creator_uid: String,
    /// When it happened, ms since the epoch (the origin's stamp, or when it was received
    /// if the origin gave none).
    pub ts_ms: i64,
    pub is_federated: bool,
    pub origin_federate: Option<String>,
    /// The CoT event the change is about (XML), sent with ADD_CONTENT as TAK Server does.
    #[serde(skip)]
    pub cot_xml: String,
    /// The mission's metadata, for CREATE_MISSION (guid, tool, description).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mission_meta: Option<MissionMeta>,
    /// The federation groups a federate gave the change (what we announce it to).
    #[serde(skip)]
    pub groups: Vec<String>,
    /// A log entry change: the entry as it was then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_entry: Option<LogEntry>,
}

/// A mission log entry, as TAK's `LogEntry` carries it (times in ms since the epoch).
#[derive(Debug, Clone, PartialEq, Default, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LogEntry {
    pub entry_uid: String,
    pub mission: String,
    pub content: String,
    pub creator_uid: String,
    pub dtg_ms: i64,
    pub created_ms: i64,
    pub servertime_ms: i64,
    pub content_hashes: Vec<String>,
    pub keywords: Vec<String>,
}

impl Change {
    pub fn new(mission: &str, change_type: ChangeType) -> Change {
        Change { id: 0, mission: mission.to_owned(), change_type, content_uid: String::new(), content_hash: String::new(), creator_uid: String::new(), ts_ms: 0, is_federated: false, origin_federate: None, cot_xml: String::new(), mission_meta: None, groups: vec![], log_entry: None }
    }
}

/// A mission's own fields, as TAK's MissionMetadata carries them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct MissionMeta {
    pub guid: String,
    pub tool: String,
    pub description: String,
    pub chat_room: String,
}

/// A federation peer.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Server {
    pub id: i64,
    pub name: String,
    pub description: String,
    /// Inbound federates: their certificate fingerprint.
    pub node_id: Option<String>,
    pub address: String,
    pub port: u16,
    pub direction: Direction,
    pub protocol: Protocol,
    pub ca_path: Option<String>,
    pub cert_path: Option<String>,
    pub key_path: Option<String>,
    pub verify_ssl: bool,
    pub enabled: bool,
    pub status: ServerStatus,
    pub last_connected: Option<String>,
    pub last_error: Option<String>,
    pub sync_missions: bool,
    pub sync_cot: bool,
    /// None: every mission; Some(empty): none.
    pub mission_filter: Option<Vec<String>>,
    pub link: String,
    pub source: Source,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mission {
    pub name: String,
    pub guid: String,
    pub creator_uid: String,
    pub tool: String,
    pub description: String,
    pub created_at: String,
    pub deleted_at: Option<String>,
    pub items: i64,
    pub changes: i64,
}

/// A queue item still to deliver.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pending {
    pub queue_id: i64,
    pub server: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: String,
    /// Queued by a replay window (not live).
    pub replay: bool,
    pub change: Change,
}

/// A file held by SHA-256 (mission content, data packages): what TAK's enterprise sync
/// keeps of it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct FileMeta {
    /// SHA-256 of the bytes, lowercase hex.
    pub hash: String,
    /// File name (TAK: filename / name).
    pub name: String,
    pub mime: String,
    pub size: i64,
    /// Who uploaded it (a certificate's CN, or the federate it came from).
    pub submitter: String,
    pub creator_uid: String,
    /// TAK's resource uid (the hash when the sender gave none).
    pub uid: String,
    pub keywords: Vec<String>,
    pub tool: String,
    pub submitted_ms: i64,
    /// The federate it came from; empty: local.
    pub origin: String,
}

/// Queue totals for one server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueStats {
    pub server_id: i64,
    pub server: String,
    pub total: i64,
    pub sent: i64,
    pub pending: i64,
    /// Pending items that failed at least once.
    pub failed: i64,
    pub oldest_pending: Option<String>,
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_refuse_strangers() {
        for t in ChangeType::ALL {
            assert_eq!(t.as_str().parse::<ChangeType>().unwrap(), *t);
        }
        assert!("CHANGE".parse::<ChangeType>().is_err());
        assert_eq!(serde_json::to_value(Direction::Inbound).unwrap(), "inbound");
        assert_eq!("v1".parse::<Protocol>(), Ok(Protocol::V1));
    }
}
