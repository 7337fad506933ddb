//! The best rules as the user's own file: each searched value replaced in the original text,
//! at the place of its scalar, so comments, order and layout stay. The result is checked by
//! parsing it again: when it does not give exactly the tree the search loaded (a value that
//! is a block, an alias), the caller falls back to the tree written as plain YAML. It never
//! reads or writes files.

use serde_json::Value;
use serde_saphyr::Spanned;

use super::Space;
use super::node::Node;

/// `text` with combination `values` of `space` written in place, if that gives exactly
/// `expected` (the tree the search loaded).
pub(crate) fn rewrite(
    text: &str,
    space: &Space,
    values: &[Value],
    expected: &Value,
) -> Option<String> {
    let root: Spanned<Node> = serde_saphyr::from_str(text).ok()?;
    let mut edits = Vec::new();
    for (p, v) in space.params.iter().zip(values) {
        let node = find(&root, &p.path)?;
        let span = node.referenced.span();
        let (at, len) = (span.byte_offset()?, span.byte_len()?);
        edits.push((
            usize::try_from(at).ok()?,
            usize::try_from(len).ok()?,
            flow(v),
        ));
    }
    edits.sort_by_key(|e| std::cmp::Reverse(e.0));
    let mut out = text.to_string();
    for (at, len, new) in edits {
        out.replace_range(at..at.checked_add(len)?.min(out.len()), &new);
    }
    let again: Value = serde_saphyr::from_str(&out).ok()?;
    (again == *expected).then_some(out)
}

/// The node at `path`: keys of mappings, list items by `name` or index.
fn find<'a>(root: &'a Spanned<Node>, path: &str) -> Option<&'a Spanned<Node>> {
    let mut node = root;
    for seg in path.split('.') {
        node = match &node.value {
            Node::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.value == seg)
                .map(|(_, v)| v)?,
            Node::Seq(items) => items
                .iter()
                .find(|i| name_of(i) == Some(seg))
                .or_else(|| seg.parse::<usize>().ok().and_then(|n| items.get(n)))?,
            Node::Scalar(_) => return None,
        };
    }
    Some(node)
}

fn name_of(item: &Spanned<Node>) -> Option<&str> {
    let Node::Map(entries) = &item.value else {
        return None;
    };
    entries
        .iter()
        .find(|(k, _)| k.value == "name")
        .and_then(|(_, v)| match &v.value {
            Node::Scalar(Value::String(s)) => Some(s.as_str()),
            _ => None,
        })
}

/// A value as YAML on one line: bare where YAML reads it back as the same value (`30s`,
/// `idle_first`, `90`), else JSON, which is YAML's flow style.
fn flow(v: &Value) -> String {
    if let Value::String(s) = v {
        let bare: Option<Value> = serde_saphyr::from_str(s).ok();
        if !s.contains(['#', ':', '\n']) && bare.as_ref() == Some(v) {
            return s.clone();
        }
    }
    v.to_string()
}
