//! TAK Federation Hub policy files, as TAK's hub UI exports them (../shared/specs/tak-fedhub.md
//! §4, §8): the current shape (`graphData.nodes`) and the legacy one
//! (`additionalData.uiData.cells`). Cells are polymorphic on `graphType`; a cell's
//! properties are under `federation` (alias `roger_federation`); unknown keys are ignored as
//! TAK's Jackson mapping does. What does not validate is refused with the node or edge it
//! concerns, never half-loaded.
//!
//! [`Policy::reach`] is the hub's routing rule: one hop along the graph from a source
//! federate, each destination with the group list the edge lets through.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;
use serde_json::Value;

/// A group node: a CA group (the CA group id of `takgate hub ca-group`) or any group name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupNode {
    pub id: String,
    pub name: String,
    /// Members exchange everything among themselves without edges.
    pub interconnected: bool,
    /// A FederationTokenGroupCell (token clients; takgate authenticates by certificate only).
    pub token: bool,
}

/// A federate node: a federate by its federate id, in the groups it lists.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FederateNode {
    pub id: String,
    pub name: String,
    pub groups: Vec<String>,
}

/// An outgoing connection of the hub (to another hub or a TAK Server).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutgoingNode {
    pub id: String,
    pub name: String,
    pub host: String,
    pub port: u16,
    pub enabled: bool,
}

/// Which of a message's groups pass an edge.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum GroupFilter {
    AllGroups,
    Allowed { allowed: Vec<String> },
    Disallowed { disallowed: Vec<String> },
    AllowedAndDisallowed { allowed: Vec<String>, disallowed: Vec<String> },
}

impl GroupFilter {
    /// Whether a message in `groups` passes (no groups: only an all-groups edge), and the
    /// groups it keeps.
    pub fn pass(&self, groups: &[String]) -> Option<Vec<String>> {
        let has = |list: &[String], g: &String| list.iter().any(|x| x == g);
        match self {
            GroupFilter::AllGroups => Some(groups.to_vec()),
            _ if groups.is_empty() => None,
            GroupFilter::Allowed { allowed } => groups.iter().any(|g| has(allowed, g)).then(|| groups.iter().filter(|g| has(allowed, g)).cloned().collect()),
            GroupFilter::Disallowed { disallowed } => (!groups.iter().any(|g| has(disallowed, g))).then(|| groups.to_vec()),
            GroupFilter::AllowedAndDisallowed { allowed, disallowed } => (groups.iter().any(|g| has(allowed, g)) && !groups.iter().any(|g| has(disallowed, g))).then(|| groups.iter().filter(|g| has(allowed, g)).cloned().collect()),
        }
    }
}

/// What an edge's end names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum End {
    Group(String),
    Federate(String),
    Outgoing(String),
}

/// A directed edge: data flows from `source` to `destination`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Edge {
    pub id: String,
    pub name: String,
    pub source: End,
    pub destination: End,
    pub filter: GroupFilter,
}

/// A validated policy graph.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    pub name: String,
    /// Federates belong to the group nodes named by their CA groups (TAK's `useCaGroups`,
    /// on by default); off, only FederateCells admit and place federates.
    pub use_ca_groups: bool,
    pub groups: Vec<GroupNode>,
    pub federates: Vec<FederateNode>,
    pub outgoings: Vec<OutgoingNode>,
    pub edges: Vec<Edge>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy { name: String::new(), use_ca_groups: true, groups: vec![], federates: vec![], outgoings: vec![], edges: vec![] }
    }
}

/// A connected federate as the router of the hub sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The federate id (name-fingerprint-serverId) or an outgoing's name.
    pub id: String,
    /// The policy's groups it belongs to (CA groups and a FederateCell's groups).
    pub groups: Vec<String>,
    pub outgoing: bool,
}

impl Member {
    fn is(&self, e: &End) -> bool {
        match e {
            End::Federate(n) => !self.outgoing && *n == self.id,
            End::Outgoing(n) => self.outgoing && *n == self.id,
            End::Group(g) => self.groups.iter().any(|x| x == g),
        }
    }
    fn is_source(&self, e: &End) -> bool {
        !matches!(e, End::Group(_)) && self.is(e)
    }
}

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array).map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

impl Policy {
    /// Parses and validates a policy file's text.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let cells = v.pointer("/graphData/nodes").or_else(|| v.pointer("/additionalData/uiData/cells")).and_then(Value::as_array).ok_or("no cells: a hub policy has graphData.nodes (or, in older exports, additionalData.uiData.cells)")?;
        let mut p = Policy { name: s(&v, "name").unwrap_or("").to_owned(), ..Default::default() };
        let mut by_id: HashMap<String, End> = HashMap::new();
        let mut edges = vec![];
        for (i, c) in cells.iter().enumerate() {
            let id = c.get("id").map(|x| x.as_str().map(str::to_owned).unwrap_or_else(|| x.to_string())).unwrap_or_default();
            let at = |m: &str| format!("node {i} (id {id:?}): {m}");
            let ty = s(c, "graphType").or_else(|| s(c, "type")).ok_or_else(|| at("no graphType"))?;
            let f = c.get("federation").or_else(|| c.get("roger_federation")).cloned().unwrap_or(Value::Null);
            let name = s(&f, "name").map(str::to_owned);
            if id.is_empty() {
                return Err(at("no id"));
            }
            let need_name = || name.clone().filter(|n| !n.is_empty()).ok_or_else(|| at(&format!("{ty} without federation.name")));
            match ty {
                "GroupCell" | "FederationTokenGroupCell" => {
                    let name = need_name()?;
                    by_id.insert(id.clone(), End::Group(name.clone()));
                    p.groups.push(GroupNode { id, name, interconnected: f.get("interconnected").and_then(Value::as_bool).unwrap_or(false), token: ty == "FederationTokenGroupCell" });
                }
                "FederateCell" => {
                    let name = need_name()?;
                    by_id.insert(id.clone(), End::Federate(name.clone()));
                    p.federates.push(FederateNode { id, name, groups: strings(f.get("groups")) });
                }
                "FederationOutgoingCell" => {
                    let name = s(&f, "outgoingName").map(str::to_owned).or(name).filter(|n| !n.is_empty()).ok_or_else(|| at("FederationOutgoingCell without federation.outgoingName"))?;
                    let host = s(&f, "host").unwrap_or("").to_owned();
                    let port = f.get("port").and_then(|p| p.as_u64().or_else(|| p.as_str().and_then(|s| s.parse().ok()))).unwrap_or(0);
                    if host.is_empty() || port == 0 || port > 65535 {
                        return Err(at(&format!("outgoing {name:?} needs federation.host and a federation.port of 1..65535")));
                    }
                    by_id.insert(id.clone(), End::Outgoing(name.clone()));
                    p.outgoings.push(OutgoingNode { id, name, host, port: port as u16, enabled: f.get("outgoingEnabled").and_then(Value::as_bool).unwrap_or(true) });
                }
                "EdgeCell" => edges.push((i, id, c.clone(), f)),
                other => return Err(at(&format!("unknown graphType {other:?} (GroupCell, FederationTokenGroupCell, FederateCell, FederationOutgoingCell or EdgeCell)"))),
            }
        }
        for (i, id, c, f) in edges {
            let name = s(&f, "name").unwrap_or("").to_owned();
            let at = |m: &str| format!("edge {i} (id {id:?}, {name:?}): {m}");
            let end = |k: &str| -> Result<End, String> {
                let r = c.get(k).and_then(|e| e.get("id")).map(|x| x.as_str().map(str::to_owned).unwrap_or_else(|| x.to_string())).ok_or_else(|| at(&format!("no {k}.id")))?;
                by_id.get(&r).cloned().ok_or_else(|| at(&format!("{k} {r:?} is not a node of the policy")))
            };
            let (source, destination) = (end("source")?, end("target")?);
            let (allowed, disallowed) = (strings(f.get("allowedGroups")), strings(f.get("disallowedGroups")));
            let filter = match s(&f, "groupsFilterType").unwrap_or("allGroups").to_ascii_lowercase().as_str() {
                "allowed" => GroupFilter::Allowed { allowed },
                "disallowed" => GroupFilter::Disallowed { disallowed },
                "allowedanddisallowed" => GroupFilter::AllowedAndDisallowed { allowed, disallowed },
                // TAK's FederateEdge: anything else is all groups.
                _ => GroupFilter::AllGroups,
            };
            p.edges.push(Edge { id, name, source, destination, filter });
        }
        let names: BTreeSet<&str> = p.groups.iter().map(|g| g.name.as_str()).collect();
        for f in &p.federates {
            if let Some(g) = f.groups.iter().find(|g| !names.contains(g.as_str())) {
                return Err(format!("federate {:?} (id {:?}): group {g:?} is not a group node of the policy", f.name, f.id));
            }
        }
        Ok(p)
    }

    /// The policy's groups a federate belongs to: its CA groups that are group nodes, and
    /// the groups of a FederateCell with its id.
    pub fn membership(&self, federate_id: &str, ca_groups: &[String]) -> Vec<String> {
        let ca_groups = if self.use_ca_groups { ca_groups } else { &[] };
        let mut out: Vec<String> = ca_groups.iter().filter(|g| self.groups.iter().any(|n| &n.name == *g)).cloned().collect();
        for f in self.federates.iter().filter(|f| f.name == federate_id) {
            out.extend(f.groups.iter().cloned());
        }
        out.sort();
        out.dedup();
        out
    }

    /// Whether a federate is admitted: a FederateCell with its id, or a member of a group.
    pub fn admits(&self, federate_id: &str, groups: &[String]) -> bool {
        !groups.is_empty() || self.federates.iter().any(|f| f.name == federate_id)
    }

    fn group(&self, name: &str) -> Option<&GroupNode> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// One hop from `src` (TAK's `findReachableFederates` and `getGroupFilteredDestinations`):
    /// every member of `members` a message in `groups` from `src` goes to, with the groups
    /// it keeps on the way.
    pub fn reach<'a>(&self, src: &Member, groups: &[String], members: impl IntoIterator<Item = &'a Member>) -> Vec<(&'a Member, Vec<String>)> {
        let mut out = vec![];
        for d in members {
            if d.id == src.id && d.outgoing == src.outgoing {
                continue;
            }
            // An edge straight from the federate decides alone.
            let direct: Vec<&Edge> = self.edges.iter().filter(|e| src.is_source(&e.source) && d.is(&e.destination)).collect();
            if let Some(e) = direct.first() {
                if let Some(g) = e.filter.pass(groups) {
                    out.push((d, g));
                }
                continue;
            }
            // Edges from its groups: all of them must pass.
            let from_groups: Vec<&Edge> = self.edges.iter().filter(|e| matches!(&e.source, End::Group(g) if src.groups.contains(g)) && d.is(&e.destination)).collect();
            if !from_groups.is_empty() {
                let mut kept: Option<Vec<String>> = Some(groups.to_vec());
                for e in from_groups {
                    kept = kept.and_then(|k| e.filter.pass(groups).map(|p| k.into_iter().filter(|g| p.contains(g)).collect()));
                }
                if let Some(g) = kept {
                    out.push((d, g));
                }
                continue;
            }
            // A shared interconnected group: everything, unfiltered.
            if src.groups.iter().any(|g| d.groups.contains(g) && self.group(g).is_some_and(|n| n.interconnected)) {
                out.push((d, groups.to_vec()));
            }
        }
        out
    }

    /// Whether any edge or interconnection leads from `s` to `d` (whatever the groups).
    pub fn reaches_at_all(&self, s: &Member, d: &Member) -> bool {
        if s.id == d.id && s.outgoing == d.outgoing {
            return false;
        }
        self.edges.iter().any(|e| (s.is_source(&e.source) || matches!(&e.source, End::Group(g) if s.groups.contains(g))) && d.is(&e.destination)) || s.groups.iter().any(|g| d.groups.contains(g) && self.group(g).is_some_and(|n| n.interconnected))
    }

    /// The filter of the edge `s` → `d` uses (for group advertisements), if any.
    pub fn edge_filter(&self, s: &Member, d: &Member) -> Option<&GroupFilter> {
        self.edges.iter().find(|e| s.is_source(&e.source) && d.is(&e.destination)).or_else(|| self.edges.iter().find(|e| matches!(&e.source, End::Group(g) if s.groups.contains(g)) && d.is(&e.destination))).map(|e| &e.filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{ "name": "minimal", "version": "1", "type": "Federation",
      "graphData": { "nodes": [
        { "graphType": "GroupCell", "id": "gA", "federation": { "name": "CA-A", "interconnected": false } },
        { "graphType": "GroupCell", "id": "gB", "federation": { "name": "CA-B", "interconnected": false } },
        { "graphType": "EdgeCell", "id": "e1", "source": { "id": "gA" }, "target": { "id": "gB" },
          "federation": { "name": "A->B", "allowedGroups": [], "disallowedGroups": [], "groupsFilterType": "allGroups", "edgeFilters": [] } },
        { "graphType": "EdgeCell", "id": "e2", "source": { "id": "gB" }, "target": { "id": "gA" },
          "federation": { "name": "B->A", "allowedGroups": ["Blue"], "groupsFilterType": "allowed" } } ] } }"#;

    fn m(id: &str, groups: &[&str]) -> Member {
        Member { id: id.into(), groups: groups.iter().map(|g| g.to_string()).collect(), outgoing: false }
    }

    #[test]
    fn the_current_shape_routes_one_hop_with_edge_filters() {
        let p = Policy::parse(MINIMAL).unwrap();
        assert_eq!((p.groups.len(), p.edges.len()), (2, 2));
        let (a, a2, b) = (m("a", &["CA-A"]), m("a2", &["CA-A"]), m("b", &["CA-B"]));
        let all = [a.clone(), a2.clone(), b.clone()];
        // A -> B: all groups, also with none; A's other federate is not reached (not interconnected).
        let r = p.reach(&a, &[], &all);
        assert_eq!(r.iter().map(|(d, _)| d.id.as_str()).collect::<Vec<_>>(), ["b"]);
        // B -> A: only messages in Blue, which keep only Blue.
        assert!(p.reach(&b, &[], &all).is_empty(), "no groups: only allGroups edges pass");
        let r = p.reach(&b, &["Blue".into(), "Red".into()], &all);
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|(_, g)| g == &["Blue".to_string()]));
        assert!(p.reach(&b, &["Red".into()], &all).is_empty());
    }

    #[test]
    fn the_legacy_shape_interconnected_groups_and_federate_cells() {
        let legacy = r#"{ "name": "old", "additionalData": { "uiData": { "cells": [
            { "graphType": "GroupCell", "id": 1, "roger_federation": { "name": "ALL", "interconnected": true } },
            { "graphType": "FederateCell", "id": 2, "roger_federation": { "name": "static-fed", "groups": ["ALL"] } },
            { "graphType": "GroupCell", "id": 3, "roger_federation": { "name": "CA-X" } },
            { "graphType": "EdgeCell", "id": 4, "source": { "id": 2 }, "target": { "id": 3 },
              "roger_federation": { "name": "s->x", "groupsFilterType": "disallowed", "disallowedGroups": ["Secret"] } } ] } } }"#;
        let mut p = Policy::parse(legacy).unwrap();
        assert_eq!(p.membership("static-fed", &[]), ["ALL"]);
        assert_eq!(p.membership("someone", &["CA-X".into()]), ["CA-X"]);
        p.use_ca_groups = false;
        assert!(p.membership("someone", &["CA-X".into()]).is_empty(), "useCaGroups off: CA groups place no one");
        p.use_ca_groups = true;
        assert!(p.admits("static-fed", &[]) && !p.admits("nobody", &[]));
        let (s, o, x) = (m("static-fed", &["ALL"]), m("other", &["ALL"]), m("x", &["CA-X"]));
        let all = [s.clone(), o.clone(), x.clone()];
        let mut r: Vec<_> = p.reach(&s, &["Blue".into()], &all).into_iter().map(|(d, _)| d.id.clone()).collect();
        r.sort();
        assert_eq!(r, ["other", "x"]);
        assert_eq!(p.reach(&s, &["Secret".into()], &all).len(), 1, "the edge refuses Secret; interconnection does not filter");
        assert!(p.reach(&x, &[], &all).is_empty(), "nothing leads from x");
    }

    /// The minimal policy of ../shared/specs/tak-fedhub.md §8.2, as written there.
    const SPEC_MINIMAL: &str = r#"{
  "name": "minimal",
  "version": "1",
  "type": "Federation",
  "description": "CA-A <-> CA-B, all groups",
  "graphData": {
    "nodes": [
      { "graphType": "GroupCell", "id": "gA",
        "federation": { "name": "CN=CA-A,O=Org A,C=US-<sha256 hex of CA-A cert DER>",
                        "interconnected": false, "allowTokenAuth": false, "tokenAuthDuration": -1 } },
      { "graphType": "GroupCell", "id": "gB",
        "federation": { "name": "CN=CA-B,O=Org B,C=US-<sha256 hex of CA-B cert DER>",
                        "interconnected": false, "allowTokenAuth": false, "tokenAuthDuration": -1 } },
      { "graphType": "EdgeCell", "id": "e1", "source": { "id": "gA" }, "target": { "id": "gB" },
        "federation": { "name": "A->B", "allowedGroups": [], "disallowedGroups": [],
                        "groupsFilterType": "allGroups", "edgeFilters": [] } },
      { "graphType": "EdgeCell", "id": "e2", "source": { "id": "gB" }, "target": { "id": "gA" },
        "federation": { "name": "B->A", "allowedGroups": [], "disallowedGroups": [],
                        "groupsFilterType": "allGroups", "edgeFilters": [] } }
    ]
  }
}"#;

    #[test]
    fn the_specs_sample_policy_loads_and_exchanges_both_ways() {
        let p = Policy::parse(SPEC_MINIMAL).unwrap();
        assert_eq!((p.name.as_str(), p.groups.len(), p.edges.len()), ("minimal", 2, 2));
        let a = m("a", &["CN=CA-A,O=Org A,C=US-<sha256 hex of CA-A cert DER>"]);
        let b = m("b", &["CN=CA-B,O=Org B,C=US-<sha256 hex of CA-B cert DER>"]);
        let all = [a.clone(), b.clone()];
        assert_eq!(p.reach(&a, &[], &all).len(), 1);
        assert_eq!(p.reach(&b, &["Cyan".into()], &all)[0].1, ["Cyan"]);
        let broken = SPEC_MINIMAL.replace(r#""target": { "id": "gA" }"#, r#""target": { "id": "gC" }"#);
        let e = Policy::parse(&broken).unwrap_err();
        assert!(e.contains("\"e2\"") && e.contains("\"B->A\"") && e.contains("\"gC\" is not a node"), "{e}");
    }

    #[test]
    fn what_does_not_validate_names_its_node_or_edge() {
        let bad_edge = MINIMAL.replace(r#""target": { "id": "gB" }"#, r#""target": { "id": "nope" }"#);
        let e = Policy::parse(&bad_edge).unwrap_err();
        assert!(e.contains("edge") && e.contains("\"e1\"") && e.contains("\"nope\" is not a node"), "{e}");
        let e = Policy::parse(&MINIMAL.replace(r#""graphType": "GroupCell", "id": "gB""#, r#""graphType": "Blob", "id": "gB""#)).unwrap_err();
        assert!(e.contains("id \"gB\"") && e.contains("unknown graphType \"Blob\""), "{e}");
        let e = Policy::parse(r#"{"graphData":{"nodes":[{"graphType":"FederateCell","id":"f","federation":{"name":"x","groups":["G"]}}]}}"#).unwrap_err();
        assert!(e.contains("group \"G\" is not a group node"), "{e}");
        assert!(Policy::parse("{}").unwrap_err().contains("graphData.nodes"));
        let e = Policy::parse(r#"{"graphData":{"nodes":[{"graphType":"FederationOutgoingCell","id":"o","federation":{"outgoingName":"up","host":"h"}}]}}"#).unwrap_err();
        assert!(e.contains("port"), "{e}");
    }
}
