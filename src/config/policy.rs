//! `[link.policy]`: what one peer may send into the router and receive from it, as the
//! user writes it (compiled into a [`crate::router::PeerPolicy`] by the router).

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    In,
    Out,
    #[default]
    Both,
}

/// Per-peer routing policy. Lists are wildcard patterns (`*`, `?`, `[abc]`, `[!abc]`).
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// in: the link only feeds the router; out: only receives; both (default).
    pub direction: Direction,
    /// Forward general CoT to this peer (default true).
    pub sync_cot: Option<bool>,
    /// Forward mission traffic (t-x-m-* and events addressed to a mission; default true).
    pub sync_missions: Option<bool>,
    /// Missions this peer gets. Absent: every mission. Empty list: none.
    pub mission_filter: Option<Vec<String>>,
    /// CoT type prefixes (or patterns) allowed toward this peer; empty: all.
    pub types_allow: Vec<String>,
    pub types_deny: Vec<String>,
    pub uids_allow: Vec<String>,
    pub uids_deny: Vec<String>,
    pub callsigns_allow: Vec<String>,
    pub callsigns_deny: Vec<String>,
    /// `__group` names accepted from this link (events without a group always pass).
    pub groups_in: Vec<String>,
    /// `__group` names delivered to this link (events without a group always pass).
    pub groups_out: Vec<String>,
    pub rate_limit: Option<RateLimitConfig>,
    /// Where direct messages (`marti/dest`) for contacts we have not seen go: links with
    /// this flag (default: true for outgoing stream connections, false otherwise).
    pub upstream: Option<bool>,
    /// Federation links: also send what came from other federates (default false: like
    /// TAK Server, federation is pair-wise).
    pub relay_federates: bool,
}

/// A token bucket per uid toward this peer: at most `burst` events, refilled one per
/// `interval_secs`. E.g. one PLI per uid every 30 s toward a radio link.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub interval_secs: f64,
    #[serde(default = "one")]
    pub burst: u32,
    /// Only events whose type matches one of these prefixes/patterns are limited; empty: all.
    #[serde(default)]
    pub types: Vec<String>,
}

fn one() -> u32 {
    1
}

impl PolicyConfig {
    /// Every pattern compiles; the rate limit is sane.
    pub fn check(&self) -> Result<(), String> {
        let lists = [
            ("types_allow", &self.types_allow),
            ("types_deny", &self.types_deny),
            ("uids_allow", &self.uids_allow),
            ("uids_deny", &self.uids_deny),
            ("callsigns_allow", &self.callsigns_allow),
            ("callsigns_deny", &self.callsigns_deny),
            ("groups_in", &self.groups_in),
            ("groups_out", &self.groups_out),
        ];
        for (k, list) in lists.into_iter().chain(self.mission_filter.as_ref().map(|m| ("mission_filter", m))) {
            for pat in list {
                crate::router::pattern::Pattern::new(pat).map_err(|e| format!("policy.{k}: {pat:?}: {e}"))?;
            }
        }
        if let Some(r) = &self.rate_limit {
            if !(r.interval_secs > 0.0) || r.burst == 0 {
                return Err("policy.rate_limit: interval_secs must be > 0 and burst >= 1".into());
            }
        }
        Ok(())
    }
}
