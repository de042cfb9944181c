//! A deliberately naive matcher with the same semantics as the snapshot:
//! a map probed once per ancestor. Tests run every table against both.

use std::collections::HashMap;

use super::{Action, ParsedList, Scope, Target};

/// Where a rule came from, comparable across matchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RefHit {
    pub file_index: usize,
    pub line: u32,
    pub action: Action,
}

/// The reference matcher.
#[derive(Default)]
pub(crate) struct ReferenceMatcher {
    names: HashMap<(String, Scope), RefHit>,
    keywords: Vec<(String, RefHit)>,
}

impl ReferenceMatcher {
    pub(crate) fn new(lists: &[ParsedList]) -> Self {
        let mut m = ReferenceMatcher::default();
        for (fi, list) in lists.iter().enumerate() {
            for r in &list.rules {
                let hit = RefHit {
                    file_index: fi,
                    line: r.line,
                    action: r.action,
                };
                match &r.target {
                    Target::Name { name, scope } => {
                        let slot = m.names.entry((name.clone(), *scope));
                        match slot {
                            std::collections::hash_map::Entry::Vacant(v) => {
                                v.insert(hit);
                            }
                            std::collections::hash_map::Entry::Occupied(mut o) => {
                                // An allow replaces a block; otherwise the first stays.
                                if hit.action.is_allow() && !o.get().action.is_allow() {
                                    o.insert(hit);
                                }
                            }
                        }
                    }
                    Target::Keyword(k) => m.keywords.push((k.clone(), hit)),
                    _ => {}
                }
            }
        }
        m
    }

    /// Same contract as `Snapshot::lookup`, on a name that may have any case.
    pub(crate) fn lookup(&self, name: &str) -> Option<&RefHit> {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        if name.is_empty() {
            return None;
        }
        let labels: Vec<&str> = name.split('.').collect();
        // From the whole name (most specific) out to the TLD; first level with a hit wins.
        for depth in 0..labels.len() {
            let suffix = labels[depth..].join(".");
            let candidates: &[Scope] = if depth == 0 {
                &[Scope::Exact, Scope::Subtree]
            } else {
                &[Scope::Subdomains, Scope::Subtree]
            };
            let mut found: Vec<&RefHit> = candidates
                .iter()
                .filter_map(|s| self.names.get(&(suffix.clone(), *s)))
                .collect();
            if found.is_empty() {
                continue;
            }
            // Allow first, then the narrower scope (listed first above).
            found.sort_by_key(|h| !h.action.is_allow());
            return found.first().copied();
        }
        // Keywords: the pattern that ends earliest in the name; ties → first listed.
        self.keywords
            .iter()
            .filter_map(|(k, h)| name.find(k.as_str()).map(|at| (at + k.len(), h)))
            .min_by_key(|(end, _)| *end)
            .map(|(_, h)| h)
    }
}
