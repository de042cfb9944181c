//! A deliberately naive matcher with the same semantics as the snapshot:
//! a map probed once per ancestor. Tests run every table against both.

use std::collections::{HashMap, HashSet};

use super::{Action, Format, ParsedList, Scope, Target};

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
    /// Per RPZ file: every owner's name (`*.x` counts as `x`), for DNS
    /// wildcard rules.
    rpz_owners: HashMap<usize, HashSet<String>>,
}

impl ReferenceMatcher {
    pub(crate) fn new(lists: &[ParsedList]) -> Self {
        let mut m = ReferenceMatcher::default();
        for (fi, list) in lists.iter().enumerate() {
            if list.format == Format::Rpz {
                let owners = list.rules.iter().filter_map(|r| match &r.target {
                    Target::Name { name, .. } => Some(name.clone()),
                    _ => None,
                });
                m.rpz_owners.insert(fi, owners.collect());
            }
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

    /// Whether the `*.suffix` rule in force, if it is an RPZ file's, is
    /// stopped for the name `labels` (the suffix starts at label `depth`):
    /// some owner of that zone is at or below a name strictly between.
    fn rpz_stopped(&self, labels: &[&str], depth: usize, suffix: &str, scope: Scope) -> bool {
        let Some(hit) = self.names.get(&(suffix.to_string(), scope)) else {
            return false;
        };
        let Some(owners) = self.rpz_owners.get(&hit.file_index) else {
            return false;
        };
        (0..depth).any(|d| {
            let e = labels[d..].join(".");
            owners
                .iter()
                .any(|n| *n == e || n.ends_with(&format!(".{e}")))
        })
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
                .filter(|s| {
                    **s != Scope::Subdomains || !self.rpz_stopped(&labels, depth, &suffix, **s)
                })
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
