//! The search space of `tune`: a YAML mapping from a dotted path into the rule file to the
//! values to try, checked against the rules (every path must exist), and the combinations it
//! spans, each applied to the rules' YAML tree.
//!
//! A path's segments are mapping keys; inside a list (`pools`, `rules`) a segment is the
//! `name` of an item or its index. It never loads rules (the caller does, with the normal
//! loader) and never reads files: it gets texts and gives back trees.

use serde_json::Value;
use serde_saphyr::Spanned;

use super::node::Node;
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

impl Space {
    /// Parses and checks a space file against the rules' tree: every problem, as
    /// `file:line:col`.
    pub fn load(file: &str, text: &str, rules: &Value) -> Result<Space, Vec<Diagnostic>> {
        let root: Spanned<Node> = serde_saphyr::from_str(text).map_err(|e| {
            let why = crate::rules::yaml_message(&e, text);
            vec![Diagnostic::at(file, e.location(), format!("space: {why}"))]
        })?;
        let mut diags = Vec::new();
        let Node::Map(entries) = root.value else {
            let why = "space: expected a mapping from a rule path to a list of values, e.g. `pools.workers.min: [1, 2]`";
            return Err(vec![Diagnostic::at(
                file,
                Some(root.referenced),
                why.into(),
            )]);
        };
        if entries.is_empty() || entries.len() > MAX_PATHS {
            let why = format!(
                "space: names {} parameters; name 1 to {MAX_PATHS}",
                entries.len()
            );
            diags.push(Diagnostic::at(file, Some(root.referenced), why));
        }
        let mut params = Vec::new();
        for (path, values) in entries {
            if let Some(param) = check_param(file, path, &values, rules, &mut diags) {
                params.push(param);
            }
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
    path: Spanned<String>,
    values: &Spanned<Node>,
    rules: &Value,
    diags: &mut Vec<Diagnostic>,
) -> Option<Param> {
    let mut at = |loc, why: String| {
        let message = format!("space: `{}`: {why}", path.value);
        diags.push(Diagnostic::at(file, Some(loc), message));
    };
    if let Err(missing) = find(rules, &path.value) {
        at(
            path.referenced,
            format!(
                "{missing}; a path names keys of the rule file, and a list item by its `name` or index (e.g. pools.workers.scale.target.value), and must already be in the rules"
            ),
        );
    }
    let Node::Seq(items) = &values.value else {
        at(
            values.referenced,
            "expected a list of values to try, e.g. [80, 90]".into(),
        );
        return None;
    };
    if items.is_empty() || items.len() > MAX_VALUES {
        at(
            values.referenced,
            format!("{} values; give 1 to {MAX_VALUES}", items.len()),
        );
    }
    let values = items.iter().map(|i| i.value.to_value()).collect();
    Some(Param {
        path: path.value,
        values,
    })
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
