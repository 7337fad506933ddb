//! What alerts and triggers say when they fire: the message template (which names a scope may
//! use) and the severity and labels. Shared by [`super::alerts`] and [`super::triggers`].

use std::collections::BTreeMap;

use serde_saphyr::Spanned;

use super::Checker;
use crate::expr::Scope;
use crate::rules::Template;

/// Names a message template of this scope may use.
fn template_names(scope: &'static Scope) -> impl Fn(&str) -> bool {
    move |n: &str| {
        matches!(n, "alert" | "rule" | "severity" | "subject" | "value")
            || scope.slot(n).is_some()
            || (scope.metadata && n.starts_with("metadata.") && n.len() > 9)
    }
}

pub(super) fn check_template(
    c: &mut Checker,
    ctx: &str,
    msg: &Option<Spanned<String>>,
    default: &str,
    scope: &'static Scope,
) -> Option<Template> {
    let valid = template_names(scope);
    let list = format!(
        "alert, rule, severity, subject, value, {}",
        scope.valid_names()
    );
    match msg {
        Some(m) => match Template::parse(&m.value, &valid, &list) {
            Ok(t) => {
                if let Some(hint) = t.prometheus_habit(&valid) {
                    c.warn(m.referenced, format!("{ctx}: {hint}"));
                }
                Some(t)
            }
            Err(e) => {
                c.at(m.referenced, format!("{ctx}: {e}"));
                None
            }
        },
        None => Template::parse(default, &valid, &list).ok(),
    }
}

/// Labels poolpilot sets itself on every Alertmanager alert; a rule's label of that name would
/// be overwritten, so it is refused.
const RESERVED_LABELS: [&str; 3] = ["alertname", "subject", "source"];

/// The severity and labels of an alert or trigger. A `severity` label is the severity (user
/// labels win over the default `warning`); one that contradicts the `severity` field is an
/// error, as is a label poolpilot sets itself.
pub(super) fn check_labels(
    c: &mut Checker,
    ctx: &str,
    name: &Spanned<String>,
    severity: &Option<String>,
    labels: &BTreeMap<String, String>,
) -> (String, BTreeMap<String, String>) {
    let from_label = labels.get("severity");
    let severity = match (severity, from_label) {
        (Some(s), Some(l)) if s != l => {
            c.at(
                name.referenced,
                format!(
                    "{ctx}: `severity: {s}` and `labels.severity: {l}` disagree; set one of them"
                ),
            );
            s.clone()
        }
        (Some(s), _) => s.clone(),
        (None, Some(l)) => l.clone(),
        (None, None) => "warning".to_string(),
    };
    for reserved in RESERVED_LABELS {
        if labels.contains_key(reserved) {
            c.at(
                name.referenced,
                format!("{ctx}: label `{reserved}` is set by poolpilot on every alert; choose another name"),
            );
        }
    }
    (severity, labels.clone())
}
