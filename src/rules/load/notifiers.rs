//! The `notifiers` section: where notifications go. A notifier's URL is a credential (a Slack
//! or webhook URL carries its token), so no message may ever echo it.

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::Checker;
use crate::rules::{Notifier, NotifierKind};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotifier {
    pub(super) name: Spanned<String>,
    kind: NotifierKind,
    #[serde(default)]
    url: Option<Spanned<String>>,
}

/// A notifier; every kind but `log` needs an http(s) URL.
pub(super) fn check_notifier(c: &mut Checker, n: &RawNotifier) -> Option<Notifier> {
    let ctx = format!("notifier {:?}", n.name.value);
    let url = n.url.as_ref().map(|u| u.value.clone());
    match (n.kind, &n.url) {
        (NotifierKind::Log, _) => {}
        (_, None) => {
            c.at(
                n.name.referenced,
                format!("{ctx}: `url` is required for kind {:?}", n.kind),
            );
            return None;
        }
        (_, Some(u)) => match url::Url::parse(&u.value) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {}
            _ => {
                // Never echo the URL: a Slack or webhook URL is a credential.
                c.at(
                    u.referenced,
                    format!(
                        "{ctx}: `url` is not an http(s) URL (the value is not shown: it may hold a secret); write it in full, such as https://hooks.slack.com/services/..."
                    ),
                );
                return None;
            }
        },
    }
    Some(Notifier {
        name: n.name.value.clone(),
        kind: n.kind,
        url,
    })
}
