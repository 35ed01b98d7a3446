//! `PeerPolicy`: what one peer may send into the router and receive from it, compiled from
//! [`PolicyConfig`]. Pure: decisions take the message facts (and, for the rate limit, the
//! current time) and return yes or no.

use std::collections::HashMap;
use std::time::Instant;

use super::message::Message;
use super::pattern::PatternList;
use crate::config::{Direction, PolicyConfig, RateLimitConfig};
use crate::link::rate::TokenBucket;

#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    pub direction: Direction,
    pub sync_cot: bool,
    pub sync_missions: bool,
    /// None: every mission; Some(empty): none.
    pub mission_filter: Option<PatternList>,
    /// The mission filter as configured (for the store's federation servers).
    mission_filter_src: Option<Vec<String>>,
    types_allow: PatternList,
    types_deny: PatternList,
    uids_allow: PatternList,
    uids_deny: PatternList,
    callsigns_allow: PatternList,
    callsigns_deny: PatternList,
    groups_in: PatternList,
    groups_out: PatternList,
    pub rate_limit: Option<RateLimitConfig>,
    rate_types: PatternList,
    pub upstream: bool,
    /// This peer is a federate.
    pub federate: bool,
    pub relay_federates: bool,
    /// No filter beyond sync_cot/sync_missions/direction: the fast path.
    plain: bool,
}

impl PeerPolicy {
    /// Compiles a policy. `upstream_default` is the default of `upstream` for this link.
    pub fn new(c: &PolicyConfig, upstream_default: bool) -> Result<PeerPolicy, String> {
        let mut p = PeerPolicy {
            direction: c.direction,
            sync_cot: c.sync_cot.unwrap_or(true),
            sync_missions: c.sync_missions.unwrap_or(true),
            mission_filter: c.mission_filter.as_ref().map(|m| PatternList::new(m)).transpose()?,
            mission_filter_src: c.mission_filter.clone(),
            types_allow: PatternList::new(&c.types_allow)?,
            types_deny: PatternList::new(&c.types_deny)?,
            uids_allow: PatternList::new(&c.uids_allow)?,
            uids_deny: PatternList::new(&c.uids_deny)?,
            callsigns_allow: PatternList::new(&c.callsigns_allow)?,
            callsigns_deny: PatternList::new(&c.callsigns_deny)?,
            groups_in: PatternList::new(&c.groups_in)?,
            groups_out: PatternList::new(&c.groups_out)?,
            rate_limit: c.rate_limit.clone(),
            rate_types: PatternList::new(c.rate_limit.as_ref().map(|r| r.types.as_slice()).unwrap_or(&[]))?,
            upstream: c.upstream.unwrap_or(upstream_default),
            federate: false,
            relay_federates: c.relay_federates,
            plain: false,
        };
        p.plain = p.mission_filter.is_none()
            && p.types_allow.is_empty()
            && p.types_deny.is_empty()
            && p.uids_allow.is_empty()
            && p.uids_deny.is_empty()
            && p.callsigns_allow.is_empty()
            && p.callsigns_deny.is_empty()
            && p.groups_out.is_empty();
        Ok(p)
    }

    /// Everything allowed, both ways.
    pub fn open() -> PeerPolicy {
        PeerPolicy::new(&PolicyConfig::default(), false).unwrap_or_default()
    }

    /// The configured mission filter patterns (None: every mission).
    pub fn mission_filter_patterns(&self) -> Option<Vec<String>> {
        self.mission_filter_src.clone()
    }

    pub fn accepts_input(&self) -> bool {
        self.direction != Direction::Out
    }

    pub fn receives_output(&self) -> bool {
        self.direction != Direction::In
    }

    /// May this link feed `m` into the router? (direction and `groups_in`)
    pub fn allows_in(&self, m: &Message) -> bool {
        self.accepts_input() && (self.groups_in.is_empty() || m.facts.group.as_deref().is_none_or(|g| self.groups_in.any(g)))
    }

    /// Whether the mission filter lets `mission` through.
    pub fn mission_allowed(&self, mission: &str) -> bool {
        self.mission_filter.as_ref().is_none_or(|f| f.any(mission))
    }

    /// May `m` be delivered to this peer? (everything but the rate limit)
    pub fn allows_out(&self, m: &Message) -> bool {
        if !self.receives_output() {
            return false;
        }
        if m.from_federate && self.federate && !self.relay_federates {
            return false;
        }
        let f = &m.facts;
        if f.is_mission {
            if !self.sync_missions {
                return false;
            }
            if !f.missions.is_empty() && !f.missions.iter().any(|n| self.mission_allowed(n)) {
                return false;
            }
        } else if !self.sync_cot {
            return false;
        }
        if self.plain {
            return true;
        }
        let ev = &m.event;
        if !self.types_allow.is_empty() && !self.types_allow.any_type(&ev.cot_type) {
            return false;
        }
        if self.types_deny.any_type(&ev.cot_type) {
            return false;
        }
        if !self.uids_allow.is_empty() && !self.uids_allow.any(&ev.uid) {
            return false;
        }
        if self.uids_deny.any(&ev.uid) {
            return false;
        }
        let cs = f.callsign.as_deref();
        if !self.callsigns_allow.is_empty() && !cs.is_some_and(|c| self.callsigns_allow.any(c)) {
            return false;
        }
        if cs.is_some_and(|c| self.callsigns_deny.any(c)) {
            return false;
        }
        if !self.groups_out.is_empty() && m.has_group_in(&self.groups_out) == Some(false) {
            return false;
        }
        true
    }
}

/// Token buckets per uid toward one peer.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: HashMap<String, TokenBucket>,
    last_sweep: Option<Instant>,
}

impl RateLimiter {
    /// Takes a token for `m` if the policy limits it; false when the bucket is empty.
    pub fn admit(&mut self, policy: &PeerPolicy, m: &Message, now: Instant) -> bool {
        let Some(r) = &policy.rate_limit else { return true };
        if !policy.rate_types.is_empty() && !policy.rate_types.any_type(&m.event.cot_type) {
            return true;
        }
        let per = r.interval_secs;
        if self.last_sweep.is_none_or(|t| now.duration_since(t).as_secs_f64() > per * 4.0 + 60.0) {
            // buckets that have filled up again carry no state
            self.buckets.retain(|_, b| !b.full_since(now));
            self.last_sweep = Some(now);
        }
        self.buckets.entry(m.event.uid.clone()).or_insert_with(|| TokenBucket::new(r.burst as f64, 1.0 / per, now)).try_take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cot::{CotEvent, CotTime, Group};
    use std::time::Duration;

    fn msg(t: &str, uid: &str, detail: &str) -> Message {
        let mut e = CotEvent::new(uid, t, "h-e", CotTime(0), 60);
        e.detail.xml = detail.into();
        Message::new(e, 1)
    }

    fn pol(toml_text: &str) -> PeerPolicy {
        let c: PolicyConfig = toml::from_str(toml_text).unwrap();
        PeerPolicy::new(&c, false).unwrap()
    }

    #[test]
    fn sync_flags() {
        let sa = msg("a-f-G", "u", "");
        let mc = msg("t-x-m-c", "u", r#"<mission name="ops"/>"#);
        let to_mission = msg("b-t-f", "u", r#"<marti><dest mission="ops"/></marti>"#);
        let p = pol("sync_cot = false");
        assert!(!p.allows_out(&sa) && p.allows_out(&mc) && p.allows_out(&to_mission));
        let p = pol("sync_missions = false");
        assert!(p.allows_out(&sa) && !p.allows_out(&mc) && !p.allows_out(&to_mission));
    }

    #[test]
    fn mission_filter_absent_empty_and_patterns() {
        let ops = msg("t-x-m-c", "u", r#"<mission name="ops-1"/>"#);
        let other = msg("t-x-m-c", "u", r#"<mission name="train"/>"#);
        assert!(pol("").allows_out(&ops) && pol("").allows_out(&other));
        let none = pol("mission_filter = []");
        assert!(!none.allows_out(&ops) && !none.allows_out(&other));
        let some = pol(r#"mission_filter = ["ops-*", "x[!a]"]"#);
        assert!(some.allows_out(&ops) && !some.allows_out(&other));
    }

    #[test]
    fn type_uid_callsign_filters() {
        let hostile = msg("a-h-G", "H1", r#"<contact callsign="Bad"/>"#);
        let friend = msg("a-f-G-U-C", "ANDROID-1", r#"<contact callsign="Alpha"/>"#);
        let p = pol(r#"types_allow = ["a-f"]"#);
        assert!(p.allows_out(&friend) && !p.allows_out(&hostile));
        let p = pol(r#"types_deny = ["a-f"]"#);
        assert!(!p.allows_out(&friend) && p.allows_out(&hostile));
        let p = pol(r#"uids_allow = ["ANDROID-*"]"#);
        assert!(p.allows_out(&friend) && !p.allows_out(&hostile));
        let p = pol(r#"uids_deny = ["H?"]"#);
        assert!(p.allows_out(&friend) && !p.allows_out(&hostile));
        let p = pol(r#"callsigns_allow = ["Al*"]"#);
        assert!(p.allows_out(&friend) && !p.allows_out(&hostile));
        let p = pol(r#"callsigns_deny = ["Bad"]"#);
        assert!(p.allows_out(&friend) && !p.allows_out(&hostile));
    }

    #[test]
    fn groups_and_direction() {
        let mut e = CotEvent::new("u", "a-f-G", "h-e", CotTime(0), 60);
        e.detail.group = Some(Group { name: "Cyan".into(), role: "Team Member".into() });
        let cyan = Message::new(e, 1);
        let nogroup = msg("a-f-G", "u", "");
        let p = pol(r#"groups_out = ["Red"]"#);
        assert!(!p.allows_out(&cyan) && p.allows_out(&nogroup));
        let p = pol(r#"groups_in = ["Red"]"#);
        assert!(!p.allows_in(&cyan) && p.allows_in(&nogroup) && p.allows_out(&cyan));
        let p = pol(r#"direction = "in""#);
        assert!(!p.allows_out(&nogroup) && p.allows_in(&nogroup));
        let p = pol(r#"direction = "out""#);
        assert!(p.allows_out(&nogroup) && !p.allows_in(&nogroup));
    }

    #[test]
    fn rate_limit_one_pli_per_uid_per_interval() {
        let p = pol("rate_limit = { interval_secs = 30, types = [\"a-\"] }");
        let mut rl = RateLimiter::default();
        let t0 = Instant::now();
        let a = msg("a-f-G", "A", "");
        let b = msg("a-f-G", "B", "");
        let chat = msg("b-t-f", "A", "");
        assert!(rl.admit(&p, &a, t0));
        assert!(!rl.admit(&p, &a, t0 + Duration::from_secs(10)));
        assert!(rl.admit(&p, &b, t0 + Duration::from_secs(10)), "per uid");
        assert!(rl.admit(&p, &chat, t0 + Duration::from_secs(10)), "other types pass");
        assert!(!rl.admit(&p, &a, t0 + Duration::from_secs(29)));
        assert!(rl.admit(&p, &a, t0 + Duration::from_secs(41)));
    }
}
