//! The search space of `tune`: a YAML mapping from a dotted path into the rule file to the
//! values to try, checked against the rules (every path must exist), and the combinations it
//! spans, each applied to the rules' YAML tree.
//!
//! A path's segments are mapping keys; inside a list (`pools`, `rules`) a segment is the
//! `name` of an item or its index. It never loads rules (the caller does, with the normal
//! loader) and never reads files: it gets texts and gives back trees.

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::rules::Diagnostic;

/// The most combinations one search may span: each runs every scenario.
pub const MAX_COMBINATIONS: usize = 1000;
/// The most paths, and values per path, a space may name.
const MAX_PATHS: usize = 16;
const MAX_VALUES: usize = 100;

/// One parameter: where it is in the rules, and the values to try, in the file's order.
#[derive(Debug, Clone)]
pub struct Param {
    pub path: String,
    pub values: Vec<Value>,
}

/// A checked space: its parameters in the file's order.
#[derive(Debug, Clone)]
pub struct Space {
    pub params: Vec<Param>,
}

/// The space file's entries with their places, in the file's order.
struct Entries(Vec<(Spanned<String>, Spanned<Vec<Value>>)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping from a rule path to a list of values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl Space {
    /// Parses and checks a space file against the rules' tree: every problem, as
    /// `file:line:col`.
    pub fn load(file: &str, text: &str, rules: &Value) -> Result<Space, Vec<Diagnostic>> {
        let entries: Entries = serde_saphyr::from_str(text).map_err(|e| {
            vec![Diagnostic::at(
                file,
                e.location(),
                format!("space: {}", crate::rules::yaml_message(&e, text)),
            )]
        })?;
        let mut diags = Vec::new();
        let mut params = Vec::new();
        if entries.0.is_empty() {
            diags.push(Diagnostic::at(
                file,
                None,
                "space: names no parameter; write `path.in.rules: [value, ...]`".into(),
            ));
        }
        if entries.0.len() > MAX_PATHS {
            diags.push(Diagnostic::at(
                file,
                None,
                format!("space: {} parameters; at most {MAX_PATHS}", entries.0.len()),
            ));
        }
        for (path, values) in entries.0 {
            check_param(file, &path, &values, rules, &mut diags);
            params.push(Param {
                path: path.value,
                values: values.value,
            });
        }
        let space = Space { params };
        if let (true, Err(m)) = (diags.is_empty(), space.count()) {
            diags.push(Diagnostic::at(file, None, format!("space: {m}")));
        }
        if diags.is_empty() {
            Ok(space)
        } else {
            Err(diags)
        }
    }

    /// How many combinations the space spans, or why it is too many.
    pub fn count(&self) -> Result<usize, String> {
        let n = self
            .params
            .iter()
            .fold(1usize, |n, p| n.saturating_mul(p.values.len()));
        if n > MAX_COMBINATIONS {
            let sizes: Vec<String> = self
                .params
                .iter()
                .map(|p| p.values.len().to_string())
                .collect();
            return Err(format!(
                "{} combinations; at most {MAX_COMBINATIONS}: try fewer values per path",
                sizes.join(" x ") + " = " + &n.to_string()
            ));
        }
        Ok(n)
    }

    /// The values of combination `index` (0 <= index < count), one per parameter: the last
    /// parameter varies fastest.
    pub fn combination(&self, mut index: usize) -> Vec<Value> {
        let mut out = vec![Value::Null; self.params.len()];
        for (slot, p) in out.iter_mut().zip(&self.params).rev() {
            *slot = p.values[index % p.values.len()].clone();
            index /= p.values.len();
        }
        out
    }

    /// The rules' tree with combination `values` set.
    pub fn apply(&self, rules: &Value, values: &[Value]) -> Value {
        let mut tree = rules.clone();
        for (p, v) in self.params.iter().zip(values) {
            if let Some(slot) = find_mut(&mut tree, &p.path) {
                *slot = v.clone();
            }
        }
        tree
    }
}

/// One entry's checks: a path that exists, a non-empty, bounded list of values.
fn check_param(
    file: &str,
    path: &Spanned<String>,
    values: &Spanned<Vec<Value>>,
    rules: &Value,
    diags: &mut Vec<Diagnostic>,
) {
    if let Err(missing) = find(rules, &path.value) {
        diags.push(Diagnostic::at(
            file,
            Some(path.referenced),
            format!(
                "space: `{}`: {missing}; a path names keys of the rule file, and a list item by its `name` or index (e.g. pools.workers.scale.target.value), and must already be in the rules",
                path.value
            ),
        ));
    }
    if values.value.is_empty() || values.value.len() > MAX_VALUES {
        diags.push(Diagnostic::at(
            file,
            Some(values.referenced),
            format!(
                "space: `{}`: {} values; give 1 to {MAX_VALUES}",
                path.value,
                values.value.len()
            ),
        ));
    }
}

/// The node at `path`, or which segment is missing.
fn find<'a>(tree: &'a Value, path: &str) -> Result<&'a Value, String> {
    let mut node = tree;
    for seg in path.split('.') {
        node = match node {
            Value::Object(m) => m.get(seg),
            Value::Array(items) => item(items, seg).map(|at| &items[at]),
            _ => None,
        }
        .ok_or_else(|| format!("no `{seg}` there"))?;
    }
    Ok(node)
}

/// The index of the item of a list named `seg`, or `seg` read as an index.
fn item(items: &[Value], seg: &str) -> Option<usize> {
    items
        .iter()
        .position(|i| i.get("name").and_then(Value::as_str) == Some(seg))
        .or_else(|| seg.parse::<usize>().ok().filter(|n| *n < items.len()))
}

/// [`find`], mutable.
fn find_mut<'a>(tree: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    let mut node = tree;
    for seg in path.split('.') {
        node = match node {
            Value::Object(m) => m.get_mut(seg)?,
            Value::Array(items) => {
                let at = item(items, seg)?;
                &mut items[at]
            }
            _ => return None,
        };
    }
    Some(node)
}
