//! Reading rule files: YAML (serde-saphyr: duplicate keys rejected, positions kept) into raw
//! structs, then checked into a [`RuleSet`], collecting every problem with its place.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::scopes::{EVENT, POOL, SANDBOX, TEAM};
use super::*;
use crate::duration::HumanDuration;
use crate::expr::{self, Kind, Scope};

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotifier {
    name: Spanned<String>,
    kind: NotifierKind,
    #[serde(default)]
    url: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSandbox {
    #[serde(default)]
    timeout: Option<HumanDuration>,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    env_vars: BTreeMap<String, String>,
    #[serde(default)]
    auto_pause: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    metric: Spanned<String>,
    value: Spanned<f64>,
    #[serde(default = "default_tolerance")]
    tolerance: Spanned<f64>,
}

fn default_tolerance() -> Spanned<f64> {
    Spanned {
        value: 0.1,
        referenced: serde_saphyr::Location::UNKNOWN,
        defined: serde_saphyr::Location::UNKNOWN,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    when: Spanned<String>,
    #[serde(default)]
    add: Option<Spanned<u32>>,
    #[serde(default)]
    remove: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpDown<T> {
    #[serde(default)]
    up: Option<T>,
    #[serde(default)]
    down: Option<T>,
}

impl<T> Default for RawUpDown<T> {
    fn default() -> Self {
        RawUpDown {
            up: None,
            down: None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScale {
    #[serde(default)]
    interval: Option<HumanDuration>,
    #[serde(default)]
    target: Option<RawTarget>,
    #[serde(default)]
    steps: Vec<RawStep>,
    #[serde(default)]
    cooldown: RawUpDown<HumanDuration>,
    #[serde(default)]
    stabilization: RawUpDown<HumanDuration>,
    #[serde(default)]
    max_step: RawUpDown<u32>,
    #[serde(default)]
    on_missing_metrics: Option<OnMissing>,
    #[serde(default)]
    stale_after: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScaleIn {
    #[serde(default)]
    victims: Option<Victims>,
    #[serde(default)]
    min_age: Option<HumanDuration>,
    #[serde(default)]
    protect: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    #[serde(default)]
    name: Option<String>,
    cron: Spanned<String>,
    #[serde(default)]
    timezone: Option<Spanned<String>>,
    #[serde(default)]
    min: Option<Spanned<u32>>,
    #[serde(default)]
    max: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    name: Spanned<String>,
    #[serde(default)]
    template: Option<String>,
    min: Spanned<u32>,
    max: Spanned<u32>,
    #[serde(default)]
    sandbox: RawSandbox,
    #[serde(default)]
    busy: Option<Spanned<String>>,
    #[serde(default)]
    scale: RawScale,
    #[serde(default)]
    scale_in: RawScaleIn,
    #[serde(default)]
    schedules: Vec<RawSchedule>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlert {
    name: Spanned<String>,
    scope: AlertScope,
    #[serde(default)]
    pool: Option<Spanned<String>>,
    when: Spanned<String>,
    #[serde(default, rename = "for")]
    for_: Option<HumanDuration>,
    #[serde(default)]
    keep_firing_for: Option<HumanDuration>,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    message: Option<Spanned<String>>,
    #[serde(default)]
    notify: Vec<Spanned<String>>,
    #[serde(default)]
    repeat_interval: Option<HumanDuration>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawAction {
    Alert,
    Replace,
    SetTimeout,
    Kill,
    Pause,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrigger {
    name: Spanned<String>,
    on: Spanned<String>,
    #[serde(default)]
    pool: Option<Spanned<String>>,
    #[serde(default)]
    when: Option<Spanned<String>>,
    action: Spanned<RawAction>,
    #[serde(default)]
    timeout: Option<HumanDuration>,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    message: Option<Spanned<String>>,
    #[serde(default)]
    notify: Vec<Spanned<String>>,
}

/// True for rule test files: `*.test.yaml` / `*.test.yml`.
pub fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".test.yaml") || name.ends_with(".test.yml")
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// The YAML files a path names: the file itself, or every YAML file below a directory, sorted.
pub fn rule_files_in(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let p = entry?.path();
            if p.is_dir() {
                stack.push(p);
            } else if is_yaml(&p) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Loads rule files and directories (test files inside directories are skipped) into one set.
pub fn load_paths(paths: &[PathBuf]) -> Result<RuleSet, Vec<Diagnostic>> {
    let mut sources = Vec::new();
    let mut diags = Vec::new();
    for path in paths {
        match rule_files_in(path) {
            Ok(files) => {
                for f in files {
                    if path.is_dir() && is_test_file(&f) {
                        continue;
                    }
                    match std::fs::read_to_string(&f) {
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

fn nowhere(file: &str, message: String) -> Diagnostic {
    Diagnostic {
        file: file.to_string(),
        line: 0,
        column: 0,
        message,
    }
}

struct Checker<'a> {
    file: &'a str,
    diags: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn at(&mut self, loc: serde_saphyr::Location, message: String) {
        self.diags.push(Diagnostic {
            file: self.file.to_string(),
            line: loc.line(),
            column: loc.column(),
            message,
        });
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
    let mut parsed = Vec::new();
    let mut diags = Vec::new();
    for (file, text) in sources {
        match serde_saphyr::from_str::<Option<RawFile>>(text) {
            Ok(raw) => parsed.push((*file, raw.unwrap_or_default())),
            Err(e) => {
                let (line, column) = e
                    .location()
                    .map(|l| (l.line(), l.column()))
                    .unwrap_or((0, 0));
                let message = e
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or("invalid YAML")
                    .trim()
                    .to_string();
                diags.push(Diagnostic {
                    file: file.to_string(),
                    line,
                    column,
                    message,
                });
            }
        }
    }
    // Names across all files, for duplicates and references.
    let mut notifiers = BTreeSet::new();
    let mut pools = BTreeSet::new();
    let mut rule_names: BTreeMap<String, ()> = BTreeMap::new();
    let mut set = RuleSet::default();
    for (file, raw) in &parsed {
        let mut c = Checker {
            file,
            diags: Vec::new(),
        };
        for n in &raw.notifiers {
            if !notifiers.insert(n.name.value.clone()) {
                c.at(
                    n.name.referenced,
                    format!(
                        "notifier {:?} is defined twice; names must be unique",
                        n.name.value
                    ),
                );
            }
        }
        for p in &raw.pools {
            if !pools.insert(p.name.value.clone()) {
                c.at(
                    p.name.referenced,
                    format!(
                        "pool {:?} is defined twice; names must be unique",
                        p.name.value
                    ),
                );
            }
        }
        for name in raw
            .alerts
            .iter()
            .map(|a| &a.name)
            .chain(raw.triggers.iter().map(|t| &t.name))
        {
            if rule_names.insert(name.value.clone(), ()).is_some() {
                c.at(
                    name.referenced,
                    format!(
                        "rule {:?} is defined twice; alert and trigger names must be unique",
                        name.value
                    ),
                );
            }
        }
        diags.append(&mut c.diags);
    }
    for (file, raw) in &parsed {
        let mut c = Checker {
            file,
            diags: Vec::new(),
        };
        for n in &raw.notifiers {
            if let Some(n) = check_notifier(&mut c, n) {
                set.notifiers.push(n);
            }
        }
        for p in &raw.pools {
            if let Some(p) = check_pool(&mut c, p) {
                set.pools.push(p);
            }
        }
        for a in &raw.alerts {
            if let Some(a) = check_alert(&mut c, a, &pools, &notifiers) {
                set.alerts.push(a);
            }
        }
        for t in &raw.triggers {
            if let Some(t) = check_trigger(&mut c, t, &pools, &notifiers) {
                set.triggers.push(t);
            }
        }
        diags.append(&mut c.diags);
    }
    if diags.is_empty() {
        Ok(set)
    } else {
        diags.sort();
        diags.dedup();
        Err(diags)
    }
}

fn check_notifier(c: &mut Checker, n: &RawNotifier) -> Option<Notifier> {
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
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
            _ => {
                c.at(
                    u.referenced,
                    format!("{ctx}: url {:?} is not an http(s) URL", u.value),
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

fn dur(d: &Option<HumanDuration>, default: Duration) -> Duration {
    d.map(|d| d.0).unwrap_or(default)
}

fn check_pool(c: &mut Checker, p: &RawPool) -> Option<Pool> {
    let ctx = format!("pool {:?}", p.name.value);
    let before = c.diags.len();
    if p.name.value.trim().is_empty() {
        c.at(p.name.referenced, "pool name must not be empty".into());
    }
    if p.min.value > p.max.value {
        c.at(
            p.min.referenced,
            format!(
                "{ctx}: min {} is greater than max {}",
                p.min.value, p.max.value
            ),
        );
    }
    if p.max.value == 0 {
        c.at(p.max.referenced, format!("{ctx}: max must be at least 1"));
    }
    let busy_src = p.busy.clone().unwrap_or(Spanned {
        value: "cpu_used_pct > 80".into(),
        referenced: p.name.referenced,
        defined: p.name.referenced,
    });
    let busy = c.expr(&busy_src, &SANDBOX, Kind::Bool, &format!("{ctx}: busy"));
    let target = p.scale.target.as_ref().and_then(|t| {
        let metric = c.expr(
            &t.metric,
            &POOL,
            Kind::Number,
            &format!("{ctx}: scale.target.metric"),
        );
        if !(t.value.value.is_finite() && t.value.value > 0.0) {
            c.at(
                t.value.referenced,
                format!(
                    "{ctx}: scale.target.value must be a number above 0, got {}",
                    t.value.value
                ),
            );
        }
        if !(0.0..1.0).contains(&t.tolerance.value) {
            c.at(
                t.tolerance.referenced,
                format!(
                    "{ctx}: scale.target.tolerance must be from 0 to 1 (0.1 = ±10 %), got {}",
                    t.tolerance.value
                ),
            );
        }
        metric.map(|metric| Target {
            metric,
            value: t.value.value,
            tolerance: t.tolerance.value,
        })
    });
    let mut steps = Vec::new();
    for (i, s) in p.scale.steps.iter().enumerate() {
        let what = format!("{ctx}: scale.steps[{i}]");
        let change = match (&s.add, &s.remove) {
            (Some(a), None) if a.value > 0 => Some(a.value as i64),
            (None, Some(r)) if r.value > 0 => Some(-(r.value as i64)),
            _ => {
                c.at(
                    s.when.referenced,
                    format!(
                        "{what}: give exactly one of `add: N` or `remove: N`, with N at least 1"
                    ),
                );
                None
            }
        };
        let when = c.expr(&s.when, &POOL, Kind::Bool, &format!("{what}.when"));
        if let (Some(when), Some(change)) = (when, change) {
            steps.push(Step { when, change });
        }
    }
    let protect = p
        .scale_in
        .protect
        .as_ref()
        .and_then(|e| c.expr(e, &SANDBOX, Kind::Bool, &format!("{ctx}: scale_in.protect")));
    let mut schedules = Vec::new();
    for (i, s) in p.schedules.iter().enumerate() {
        let what = format!("{ctx}: schedules[{i}]");
        let tz = s
            .timezone
            .as_ref()
            .map(|t| t.value.as_str())
            .unwrap_or("UTC");
        match CronSchedule::parse(&s.cron.value, tz) {
            Ok(cron) => {
                if s.min.is_none() && s.max.is_none() {
                    c.at(
                        s.cron.referenced,
                        format!("{what}: set `min`, `max` or both"),
                    );
                }
                let (min, max) = (
                    s.min.as_ref().map(|m| m.value),
                    s.max.as_ref().map(|m| m.value),
                );
                let (emin, emax) = (min.unwrap_or(p.min.value), max.unwrap_or(p.max.value));
                if emin > emax {
                    let loc = s
                        .min
                        .as_ref()
                        .map(|m| m.referenced)
                        .unwrap_or(s.cron.referenced);
                    c.at(
                        loc,
                        format!("{what}: min {emin} would be greater than max {emax}"),
                    );
                }
                schedules.push(Schedule {
                    name: s.name.clone().unwrap_or_else(|| format!("schedules[{i}]")),
                    cron,
                    min,
                    max,
                });
            }
            Err(e) => {
                let loc = if e.contains("time zone") {
                    s.timezone
                        .as_ref()
                        .map(|t| t.referenced)
                        .unwrap_or(s.cron.referenced)
                } else {
                    s.cron.referenced
                };
                c.at(loc, format!("{what}: {e}"));
            }
        }
    }
    let interval = dur(&p.scale.interval, Duration::from_secs(15));
    if interval.is_zero() {
        c.at(
            p.name.referenced,
            format!("{ctx}: scale.interval must be above 0s"),
        );
    }
    if c.diags.len() > before {
        return None;
    }
    Some(Pool {
        name: p.name.value.clone(),
        template: p.template.clone().unwrap_or_else(|| "base".into()),
        min: p.min.value,
        max: p.max.value,
        sandbox: SandboxSettings {
            timeout: p.sandbox.timeout.map(|d| d.0),
            metadata: p.sandbox.metadata.clone(),
            env_vars: p.sandbox.env_vars.clone(),
            auto_pause: p.sandbox.auto_pause,
        },
        busy: busy?,
        interval,
        target,
        steps,
        cooldown: UpDown {
            up: dur(&p.scale.cooldown.up, Duration::ZERO),
            down: dur(&p.scale.cooldown.down, Duration::ZERO),
        },
        stabilization: UpDown {
            up: dur(&p.scale.stabilization.up, Duration::ZERO),
            down: dur(&p.scale.stabilization.down, Duration::from_secs(300)),
        },
        max_step: UpDown {
            up: p.scale.max_step.up,
            down: p.scale.max_step.down,
        },
        on_missing: p.scale.on_missing_metrics.unwrap_or(OnMissing::Hold),
        stale_after: dur(&p.scale.stale_after, Duration::from_secs(30)),
        victims: p.scale_in.victims.unwrap_or(Victims::IdleFirst),
        min_age: dur(&p.scale_in.min_age, Duration::ZERO),
        protect,
        schedules,
        dry_run: p.dry_run,
    })
}

fn check_refs(
    c: &mut Checker,
    ctx: &str,
    pool: &Option<Spanned<String>>,
    notify: &[Spanned<String>],
    pools: &BTreeSet<String>,
    notifiers: &BTreeSet<String>,
) {
    if let Some(p) = pool
        && !pools.contains(&p.value)
    {
        let known: Vec<&str> = pools.iter().map(String::as_str).collect();
        c.at(
            p.referenced,
            format!(
                "{ctx}: unknown pool {:?}; defined pools: {}",
                p.value,
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ),
        );
    }
    for n in notify {
        if !notifiers.contains(&n.value) {
            let known: Vec<&str> = notifiers.iter().map(String::as_str).collect();
            c.at(
                n.referenced,
                format!(
                    "{ctx}: unknown notifier {:?}; defined notifiers: {}",
                    n.value,
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
    }
}

/// Names a message template of this scope may use.
fn template_names(scope: &'static Scope) -> impl Fn(&str) -> bool {
    move |n: &str| {
        matches!(n, "alert" | "rule" | "severity" | "subject" | "value")
            || scope.slot(n).is_some()
            || (scope.metadata && n.starts_with("metadata.") && n.len() > 9)
    }
}

fn check_template(
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
            Ok(t) => Some(t),
            Err(e) => {
                c.at(m.referenced, format!("{ctx}: {e}"));
                None
            }
        },
        None => Template::parse(default, &valid, &list).ok(),
    }
}

fn check_alert(
    c: &mut Checker,
    a: &RawAlert,
    pools: &BTreeSet<String>,
    notifiers: &BTreeSet<String>,
) -> Option<Alert> {
    let ctx = format!("alert {:?}", a.name.value);
    let before = c.diags.len();
    let scope: &'static Scope = match a.scope {
        AlertScope::Sandbox => &SANDBOX,
        AlertScope::Pool => &POOL,
        AlertScope::Team => &TEAM,
    };
    if a.scope == AlertScope::Team && a.pool.is_some() {
        c.at(
            a.name.referenced,
            format!("{ctx}: a team alert covers every pool; remove `pool`"),
        );
    }
    check_refs(c, &ctx, &a.pool, &a.notify, pools, notifiers);
    let when = c.expr(&a.when, scope, Kind::Bool, &format!("{ctx}: when"));
    let message = check_template(
        c,
        &ctx,
        &a.message,
        "{alert} is firing for {subject}",
        scope,
    );
    let repeat = dur(&a.repeat_interval, Duration::from_secs(4 * 3600));
    if repeat.is_zero() {
        c.at(
            a.name.referenced,
            format!("{ctx}: repeat_interval must be above 0s"),
        );
    }
    if c.diags.len() > before {
        return None;
    }
    Some(Alert {
        name: a.name.value.clone(),
        scope: a.scope,
        pool: a.pool.as_ref().map(|p| p.value.clone()),
        when: when?,
        for_: dur(&a.for_, Duration::ZERO),
        keep_firing_for: dur(&a.keep_firing_for, Duration::ZERO),
        severity: a.severity.clone().unwrap_or_else(|| "warning".into()),
        labels: a.labels.clone(),
        message: message?,
        notify: a.notify.iter().map(|n| n.value.clone()).collect(),
        repeat_interval: repeat,
    })
}

fn check_trigger(
    c: &mut Checker,
    t: &RawTrigger,
    pools: &BTreeSet<String>,
    notifiers: &BTreeSet<String>,
) -> Option<Trigger> {
    let ctx = format!("trigger {:?}", t.name.value);
    let before = c.diags.len();
    let on_text = t.on.value.trim();
    let full = if on_text.contains('.') {
        on_text.to_string()
    } else {
        format!("sandbox.lifecycle.{on_text}")
    };
    let on = EventType::parse(&full);
    if let EventType::Other(_) = on {
        let known: Vec<&str> = EventType::KNOWN
            .iter()
            .map(|e| e.as_str().trim_start_matches("sandbox.lifecycle."))
            .collect();
        c.at(t.on.referenced, format!("{ctx}: unknown event type {:?}; valid: {} (or their full sandbox.lifecycle.* names)", t.on.value, known.join(", ")));
    }
    check_refs(c, &ctx, &t.pool, &t.notify, pools, notifiers);
    let when = t
        .when
        .as_ref()
        .and_then(|w| c.expr(w, &EVENT, Kind::Bool, &format!("{ctx}: when")));
    let action = match t.action.value {
        RawAction::Alert => TriggerAction::Alert,
        RawAction::Replace => TriggerAction::Replace,
        RawAction::SetTimeout => match t.timeout {
            Some(d) => TriggerAction::SetTimeout(d.0),
            None => {
                c.at(
                    t.action.referenced,
                    format!("{ctx}: action set_timeout needs `timeout`, e.g. timeout: 10m"),
                );
                TriggerAction::SetTimeout(Duration::ZERO)
            }
        },
        RawAction::Kill => TriggerAction::Kill,
        RawAction::Pause => TriggerAction::Pause,
    };
    if !matches!(action, TriggerAction::Alert) && t.pool.is_none() {
        c.at(t.action.referenced, format!("{ctx}: action {:?} acts on sandboxes and needs `pool`: poolpilot only touches sandboxes it owns", t.action.value));
    }
    if matches!(action, TriggerAction::Alert) && t.notify.is_empty() {
        c.at(
            t.action.referenced,
            format!("{ctx}: action alert needs `notify` with at least one notifier"),
        );
    }
    let message = check_template(
        c,
        &ctx,
        &t.message,
        "{rule}: {type} for sandbox {sandbox_id}",
        &EVENT,
    );
    if c.diags.len() > before {
        return None;
    }
    Some(Trigger {
        name: t.name.value.clone(),
        on,
        pool: t.pool.as_ref().map(|p| p.value.clone()),
        when,
        action,
        severity: t.severity.clone().unwrap_or_else(|| "warning".into()),
        labels: t.labels.clone(),
        message: message?,
        notify: t.notify.iter().map(|n| n.value.clone()).collect(),
    })
}

#[cfg(test)]
mod tests;
