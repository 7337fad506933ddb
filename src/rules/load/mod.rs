//! Reading rule files: YAML (serde-saphyr: duplicate keys rejected, positions kept) into raw
//! structs, then checked into a [`RuleSet`], collecting every problem with its place.
//!
//! Loading is all or nothing: [`load_str`] returns a set only when no file has an error, so a
//! caller (the agent's reload, `check`, the rule tests) either gets a valid set or keeps what it
//! had. Names are collected across all files first, so a rule may name a pool or notifier
//! defined in another file.
//!
//! Each section is checked in its own room, each raw struct next to its checks:
//! [`pools`] (with [`schedules`], and its service fields in [`lifetime`]), [`alerts`], [`triggers`], [`notifiers`]; what alerts and
//! triggers say is checked in [`messages`]; bounded numbers and durations in [`values`];
//! which files are rule files in [`files`]. Every check reports through a [`Checker`] as
//! `file:line:col: <rule>: <field>: problem` and never panics.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{Diagnostic, RuleSet};
use crate::expr::{self, Expr, Kind, Scope};
use alerts::{RawAlert, check_alert};
pub(crate) use files::{is_test_file, rule_files_in};
use notifiers::{RawNotifier, check_notifier};
use pools::{RawPool, check_pool};
use triggers::{RawTrigger, check_trigger};
pub(crate) use values::yaml_message;

mod alerts;
mod files;
mod lifetime;
mod messages;
mod notifiers;
mod pools;
mod schedules;
mod triggers;
mod values;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    notifiers: Vec<RawNotifier>,
    #[serde(default)]
    pools: Vec<RawPool>,
    #[serde(default)]
    alerts: Vec<RawAlert>,
    #[serde(default)]
    triggers: Vec<RawTrigger>,
}

/// True when `text` is poolpilot's agent configuration (`poolpilot run --config`) rather than
/// a rule file: a mapping with the agent's required keys and none of a rule file's sections.
fn is_agent_config(text: &str) -> bool {
    let Ok(Some(map)) =
        serde_saphyr::from_str::<Option<BTreeMap<String, serde::de::IgnoredAny>>>(text)
    else {
        return false;
    };
    let rule_keys = ["notifiers", "pools", "alerts", "triggers"];
    map.contains_key("state_dir") && !rule_keys.iter().any(|k| map.contains_key(*k))
}

/// Loads rule files and directories (test files inside directories are skipped) into one set.
pub(crate) fn load_paths(paths: &[PathBuf]) -> Result<RuleSet, Vec<Diagnostic>> {
    let mut sources = Vec::new();
    let mut diags = Vec::new();
    for path in paths {
        match rule_files_in(path) {
            Ok(files) => {
                for f in files {
                    if path.is_dir() && is_test_file(&f) {
                        continue;
                    }
                    match crate::files::read_regular(&f, crate::files::MAX_TEXT_FILE) {
                        Ok(text) => sources.push((f.display().to_string(), text)),
                        Err(e) => diags.push(nowhere(
                            &f.display().to_string(),
                            format!("cannot read: {e}"),
                        )),
                    }
                }
            }
            Err(e) => diags.push(nowhere(
                &path.display().to_string(),
                format!("cannot read: {e}"),
            )),
        }
    }
    if sources.is_empty() && diags.is_empty() {
        diags.push(nowhere(
            &paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            "no rule files found (*.yaml or *.yml)".to_string(),
        ));
    }
    let refs: Vec<(&str, &str)> = sources
        .iter()
        .map(|(f, t)| (f.as_str(), t.as_str()))
        .collect();
    match load_str(&refs) {
        Ok(set) if diags.is_empty() => Ok(set),
        Ok(_) => Err(diags),
        Err(mut more) => {
            diags.append(&mut more);
            Err(diags)
        }
    }
}

/// A problem with a whole file (unreadable, skipped), at no line.
fn nowhere(file: &str, message: String) -> Diagnostic {
    Diagnostic::at(file, None, message)
}

/// Collects one file's problems as it is checked: errors reject the whole set, warnings do not
/// (`check` prints them).
struct Checker<'a> {
    file: &'a str,
    diags: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl<'a> Checker<'a> {
    fn new(file: &'a str) -> Self {
        Checker {
            file,
            diags: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn warn(&mut self, loc: serde_saphyr::Location, message: String) {
        let warning = Diagnostic::at(self.file, Some(loc), format!("warning: {message}"));
        self.warnings.push(warning);
    }

    fn at(&mut self, loc: serde_saphyr::Location, message: String) {
        self.diags
            .push(Diagnostic::at(self.file, Some(loc), message));
    }

    fn expr(
        &mut self,
        s: &Spanned<String>,
        scope: &'static Scope,
        kind: Kind,
        what: &str,
    ) -> Option<Expr> {
        match expr::compile(&s.value, scope, kind) {
            Ok(e) => Some(e),
            Err(e) => {
                self.at(s.referenced, format!("{what}: {e}"));
                None
            }
        }
    }
}

/// Loads rule sources (file name, text) into one checked set.
pub fn load_str(sources: &[(&str, &str)]) -> Result<RuleSet, Vec<Diagnostic>> {
    let (parsed, mut diags, notes) = parse_sources(sources);
    let names = check_unique_names(&parsed, &mut diags);
    let mut set = RuleSet {
        warnings: notes,
        ..RuleSet::default()
    };
    for (file, raw) in &parsed {
        let mut c = Checker::new(file);
        check_file(&mut c, raw, &names, &mut set);
        diags.append(&mut c.diags);
        set.warnings.append(&mut c.warnings);
    }
    if diags.is_empty() {
        set.warnings.sort();
        Ok(set)
    } else {
        diags.sort();
        diags.dedup();
        Err(diags)
    }
}

type Parsed<'a> = Vec<(&'a str, RawFile)>;

/// Parses each source: the raw files, the YAML errors, and notes about skipped files.
fn parse_sources<'a>(
    sources: &[(&'a str, &str)],
) -> (Parsed<'a>, Vec<Diagnostic>, Vec<Diagnostic>) {
    let (mut parsed, mut diags, mut notes) = (Vec::new(), Vec::new(), Vec::new());
    for (file, text) in sources {
        if is_agent_config(text) {
            notes.push(nowhere(
                file,
                "warning: skipped: this is poolpilot's agent config (`poolpilot run --config`), not a rule file; its `rules` list names the rule files".to_string(),
            ));
            continue;
        }
        match serde_saphyr::from_str::<Option<RawFile>>(text) {
            Ok(raw) => parsed.push((*file, raw.unwrap_or_default())),
            Err(e) => diags.push(Diagnostic::at(
                file,
                e.location(),
                values::yaml_message(&e, text),
            )),
        }
    }
    (parsed, diags, notes)
}

/// The names defined across all files, for references.
struct Names {
    notifiers: BTreeSet<String>,
    pools: BTreeSet<String>,
}

/// Collects names across all files; a name defined twice is an error at its second place.
fn check_unique_names(parsed: &Parsed<'_>, diags: &mut Vec<Diagnostic>) -> Names {
    let mut names = Names {
        notifiers: BTreeSet::new(),
        pools: BTreeSet::new(),
    };
    let mut rules: BTreeSet<String> = BTreeSet::new();
    for (file, raw) in parsed {
        let mut c = Checker::new(file);
        let mut unique =
            |set: &mut BTreeSet<String>, name: &Spanned<String>, what: &str, hint: &str| {
                if !set.insert(name.value.clone()) {
                    c.at(
                        name.referenced,
                        format!(
                            "{what} {:?} is defined twice; {hint} names must be unique",
                            name.value
                        ),
                    );
                }
            };
        for n in &raw.notifiers {
            unique(&mut names.notifiers, &n.name, "notifier", "notifier");
        }
        for p in &raw.pools {
            unique(&mut names.pools, &p.name, "pool", "pool");
        }
        for name in raw
            .alerts
            .iter()
            .map(|a| &a.name)
            .chain(raw.triggers.iter().map(|t| &t.name))
        {
            unique(&mut rules, name, "rule", "alert and trigger");
        }
        diags.append(&mut c.diags);
    }
    names
}

/// Checks every section of one file into `set`.
fn check_file(c: &mut Checker, raw: &RawFile, names: &Names, set: &mut RuleSet) {
    set.notifiers
        .extend(raw.notifiers.iter().filter_map(|n| check_notifier(c, n)));
    set.pools
        .extend(raw.pools.iter().filter_map(|p| check_pool(c, p)));
    set.alerts
        .extend(raw.alerts.iter().filter_map(|a| check_alert(c, a, names)));
    set.triggers.extend(
        raw.triggers
            .iter()
            .filter_map(|t| check_trigger(c, t, names)),
    );
}

/// The pool and notifiers an alert or trigger names are defined (in any file).
fn check_refs(
    c: &mut Checker,
    ctx: &str,
    pool: &Option<Spanned<String>>,
    notify: &[Spanned<String>],
    names: &Names,
) {
    let (pools, notifiers) = (&names.pools, &names.notifiers);
    if let Some(p) = pool
        && !pools.contains(&p.value)
    {
        c.at(
            p.referenced,
            format!(
                "{ctx}: unknown pool {:?}; defined pools: {}",
                p.value,
                listed(pools)
            ),
        );
    }
    for n in notify {
        if !notifiers.contains(&n.value) {
            c.at(
                n.referenced,
                format!(
                    "{ctx}: unknown notifier {:?}; defined notifiers: {}",
                    n.value,
                    listed(notifiers)
                ),
            );
        }
    }
}

/// `a, b, c`, or `none`.
fn listed(names: &BTreeSet<String>) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests;
