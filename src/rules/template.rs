//! Message templates: text with `{name}` placeholders, checked at load against the names the
//! rule's scope provides, rendered without ever failing (an unset value renders empty).

/// A checked message template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    text: String,
}

impl Template {
    /// Checks every `{name}` against `valid`; `{{` and `}}` stand for literal braces.
    pub(crate) fn parse(
        text: &str,
        valid: &dyn Fn(&str) -> bool,
        valid_list: &str,
    ) -> Result<Template, String> {
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            let c = rest.as_bytes()[i];
            let after = &rest[i + 1..];
            if after.starts_with(c as char) {
                rest = &after[1..];
                continue;
            }
            if c == b'}' {
                return Err(format!(
                    "unmatched '}}' in message {text:?}; write '}}}}' for a literal brace"
                ));
            }
            let Some(end) = after.find('}') else {
                return Err(format!("unclosed '{{' in message {text:?}"));
            };
            let name = after[..end].trim();
            if !valid(name) {
                return Err(format!(
                    "unknown placeholder {{{name}}} in message {text:?}; valid: {valid_list}"
                ));
            }
            rest = &after[end + 1..];
        }
        Ok(Template {
            text: text.to_string(),
        })
    }

    /// A hint when the text uses Prometheus' `{{ $labels.x }}` or `{{ $value }}`, which
    /// poolpilot renders literally (`{{` is a literal brace here): the right spelling.
    pub(crate) fn prometheus_habit(&self, valid: &dyn Fn(&str) -> bool) -> Option<String> {
        let i = self.text.find("{{")?;
        let rest = &self.text[i + 2..];
        let end = rest.find("}}")?;
        let inner = rest[..end].trim();
        let name = inner
            .strip_prefix("$labels.")
            .or_else(|| inner.strip_prefix(".Labels."))
            .or_else(|| (inner == "$value" || inner == ".Value").then_some("value"))?;
        let fix = if valid(name) {
            format!("write {{{name}}}")
        } else {
            "write {name} with a variable of the rule's scope".to_string()
        };
        Some(format!(
            "message uses Prometheus' `{{{{{}}}}}`, which poolpilot prints literally ({{{{ is a literal brace here); {fix}",
            &rest[..end]
        ))
    }

    /// The names of its placeholders.
    pub(crate) fn placeholders(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = self.text.as_str();
        while let Some(i) = rest.find(['{', '}']) {
            let c = rest.as_bytes()[i] as char;
            let after = &rest[i + 1..];
            if after.starts_with(c) {
                rest = &after[1..];
                continue;
            }
            match (c, after.find('}')) {
                ('{', Some(end)) => {
                    out.push(after[..end].trim().to_string());
                    rest = &after[end + 1..];
                }
                _ => rest = after,
            }
        }
        out
    }

    /// Fills placeholders with `lookup`; unknown names render empty.
    pub(crate) fn render(&self, lookup: &dyn Fn(&str) -> Option<String>) -> String {
        let mut out = String::with_capacity(self.text.len() + 32);
        let mut rest = self.text.as_str();
        while let Some(i) = rest.find(['{', '}']) {
            out.push_str(&rest[..i]);
            let c = rest.as_bytes()[i] as char;
            let after = &rest[i + 1..];
            if after.starts_with(c) {
                out.push(c);
                rest = &after[1..];
                continue;
            }
            match (c, after.find('}')) {
                ('{', Some(end)) => {
                    out.push_str(&lookup(after[..end].trim()).unwrap_or_default());
                    rest = &after[end + 1..];
                }
                _ => {
                    out.push(c);
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_and_renders() {
        let ok = |n: &str| n == "pool" || n == "value";
        let t = Template::parse("{pool} at {value}% {{x}}", &ok, "pool, value").unwrap();
        let s = t.render(&|n| Some(format!("<{n}>")));
        assert_eq!(s, "<pool> at <value>% {x}");
        assert!(
            Template::parse("{nope}", &ok, "pool")
                .unwrap_err()
                .contains("valid: pool")
        );
        assert!(Template::parse("{pool", &ok, "").is_err());
        let prom = Template::parse("{{ $labels.pool }} is hot", &ok, "").unwrap();
        let hint = prom.prometheus_habit(&ok).unwrap();
        assert!(
            hint.contains("`{{ $labels.pool }}`") && hint.contains("write {pool}"),
            "{hint}"
        );
        assert!(t.prometheus_habit(&ok).is_none());
        assert!(Template::parse("pool}", &ok, "").is_err());
    }
}
