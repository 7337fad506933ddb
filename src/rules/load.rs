//! Reading rule files: YAML (serde-saphyr: duplicate keys rejected, positions kept) into raw
//! structs, then checked into a [`RuleSet`], collecting every problem with its place.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::scopes::{EVENT, POOL, SANDBOX, TEAM};
use super::*;
use crate::duration::HumanDuration;
use crate::expr::{self, Kind, Scope};
pub(crate) use values::yaml_message;
use values::{DAY, MAX_COUNT, MONTH, RawNumber, SECOND, WEEK, count, duration, opt_count};

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
    timeout: Option<Spanned<HumanDuration>>,
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
    add: Option<Spanned<RawNumber>>,
    #[serde(default)]
    remove: Option<Spanned<RawNumber>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "T: Deserialize<'de>"))]
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
    interval: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    target: Option<RawTarget>,
    #[serde(default)]
    steps: Vec<RawStep>,
    #[serde(default)]
    cooldown: RawUpDown<Spanned<HumanDuration>>,
    #[serde(default)]
    stabilization: RawUpDown<Spanned<HumanDuration>>,
    #[serde(default)]
    max_step: RawUpDown<Spanned<RawNumber>>,
    #[serde(default)]
    on_missing_metrics: Option<OnMissing>,
    #[serde(default)]
    stale_after: Option<Spanned<HumanDuration>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScaleIn {
    #[serde(default)]
    victims: Option<Victims>,
    #[serde(default)]
    min_age: Option<Spanned<HumanDuration>>,
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
    min: Option<Spanned<RawNumber>>,
    #[serde(default)]
    max: Option<Spanned<RawNumber>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    name: Spanned<String>,
    #[serde(default)]
    template: Option<String>,
    min: Spanned<RawNumber>,
    max: Spanned<RawNumber>,
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
    for_: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    keep_firing_for: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    message: Option<Spanned<String>>,
    #[serde(default)]
    notify: Vec<Spanned<String>>,
    #[serde(default)]
    repeat_interval: Option<Spanned<HumanDuration>>,
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
    timeout: Option<Spanned<HumanDuration>>,
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

/// Deepest directory nesting walked below a rule directory.
const MAX_DIR_DEPTH: usize = 32;

/// The YAML files a path names: the file itself, or every YAML file below a directory, sorted.
///
/// Inside a directory, entries whose name starts with `.` are skipped (editors' swap files,
/// Kubernetes' `..data` and `..2026_...` ConfigMap folders), symbolic links are followed but a
/// directory already visited (a link loop) is not walked again, and a file reached by two paths
/// (`a.yaml -> ..data/a.yaml`) is listed once, under the first of its names.
pub fn rule_files_in(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut found: Vec<PathBuf> = Vec::new();
    let mut visited_dirs: HashSet<PathBuf> = HashSet::new();
    let mut stack = vec![(path.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        if depth > MAX_DIR_DEPTH || !visited_dirs.insert(std::fs::canonicalize(&dir)?) {
            continue;
        }
        for entry in std::fs::read_dir(&dir)? {
            let p = entry?.path();
            if p.file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|n| n.starts_with('.'))
            {
                continue;
            }
            if p.is_dir() {
                stack.push((p, depth + 1));
            } else if is_yaml(&p) {
                found.push(p);
            }
        }
    }
    found.sort();
    let mut seen_files: HashSet<PathBuf> = HashSet::new();
    // A dangling link cannot be canonicalized: keep it, so that reading it reports the problem.
    found.retain(|f| seen_files.insert(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())));
    Ok(found)
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
        self.warnings.push(Diagnostic {
            file: self.file.to_string(),
            line: loc.line(),
            column: loc.column(),
            message: format!("warning: {message}"),
        });
    }

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
            Err(e) => {
                let (line, column) = e
                    .location()
                    .map(|l| (l.line(), l.column()))
                    .unwrap_or((0, 0));
                diags.push(Diagnostic {
                    file: file.to_string(),
                    line,
                    column,
                    message: values::yaml_message(&e, text),
                });
            }
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
    let (pools, notifiers) = (&names.pools, &names.notifiers);
    set.notifiers
        .extend(raw.notifiers.iter().filter_map(|n| check_notifier(c, n)));
    set.pools
        .extend(raw.pools.iter().filter_map(|p| check_pool(c, p)));
    set.alerts.extend(
        raw.alerts
            .iter()
            .filter_map(|a| check_alert(c, a, pools, notifiers)),
    );
    set.triggers.extend(
        raw.triggers
            .iter()
            .filter_map(|t| check_trigger(c, t, pools, notifiers)),
    );
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

fn check_pool(c: &mut Checker, p: &RawPool) -> Option<Pool> {
    let ctx = format!("pool {:?}", p.name.value);
    let before = c.diags.len();
    if p.name.value.trim().is_empty() {
        c.at(p.name.referenced, "pool name must not be empty".into());
    }
    let (min, max) = check_pool_bounds(c, &ctx, p);
    let busy_src = p.busy.clone().unwrap_or(Spanned {
        value: "cpu_used_pct > 80".into(),
        referenced: p.name.referenced,
        defined: p.name.referenced,
    });
    let busy = c.expr(&busy_src, &SANDBOX, Kind::Bool, &format!("{ctx}: busy"));
    let target = p
        .scale
        .target
        .as_ref()
        .and_then(|t| check_target(c, &ctx, t));
    let steps = check_steps(c, &ctx, &p.scale.steps);
    let protect = p
        .scale_in
        .protect
        .as_ref()
        .and_then(|e| c.expr(e, &SANDBOX, Kind::Bool, &format!("{ctx}: scale_in.protect")));
    let schedules = check_schedules(c, &ctx, p, min.zip(max));
    let max_step = UpDown {
        up: opt_count(
            c,
            &ctx,
            "scale.max_step.up",
            &p.scale.max_step.up,
            (1, MAX_COUNT),
        ),
        down: opt_count(
            c,
            &ctx,
            "scale.max_step.down",
            &p.scale.max_step.down,
            (1, MAX_COUNT),
        ),
    };
    let sandbox = check_sandbox(c, &ctx, &p.sandbox);
    let (sc, si) = (&p.scale, &p.scale_in);
    let mut d = |field: &str, v: &Option<Spanned<HumanDuration>>, default: u64, range| {
        duration(c, &ctx, field, v, Duration::from_secs(default), range)
    };
    let interval = d("scale.interval", &sc.interval, 15, (SECOND, DAY));
    let cooldown = UpDown {
        up: d(
            "scale.cooldown.up",
            &sc.cooldown.up,
            0,
            (Duration::ZERO, DAY),
        ),
        down: d(
            "scale.cooldown.down",
            &sc.cooldown.down,
            0,
            (Duration::ZERO, DAY),
        ),
    };
    let stabilization = UpDown {
        up: d(
            "scale.stabilization.up",
            &sc.stabilization.up,
            0,
            (Duration::ZERO, DAY),
        ),
        down: d(
            "scale.stabilization.down",
            &sc.stabilization.down,
            300,
            (Duration::ZERO, DAY),
        ),
    };
    let stale_after = d("scale.stale_after", &sc.stale_after, 30, (SECOND, DAY));
    let min_age = d("scale_in.min_age", &si.min_age, 0, (Duration::ZERO, DAY));
    if c.diags.len() > before {
        return None;
    }
    Some(Pool {
        name: p.name.value.clone(),
        template: p.template.clone().unwrap_or_else(|| "base".into()),
        min: min?,
        max: max?,
        sandbox: sandbox?,
        busy: busy?,
        interval,
        target,
        steps,
        cooldown,
        stabilization,
        max_step: UpDown {
            up: max_step.up?,
            down: max_step.down?,
        },
        on_missing: p.scale.on_missing_metrics.unwrap_or(OnMissing::Hold),
        stale_after,
        victims: p.scale_in.victims.unwrap_or(Victims::IdleFirst),
        min_age,
        protect,
        schedules,
        dry_run: p.dry_run,
    })
}

/// E2B's longest sandbox lifetime: a create asking for more is refused with a 400.
const MAX_SANDBOX_TIMEOUT: Duration = DAY;

fn check_sandbox(c: &mut Checker, ctx: &str, s: &RawSandbox) -> Option<SandboxSettings> {
    let before = c.diags.len();
    let timeout = s.timeout.as_ref().map(|_| {
        duration(
            c,
            ctx,
            "sandbox.timeout",
            &s.timeout,
            Duration::ZERO,
            (SECOND, MAX_SANDBOX_TIMEOUT),
        )
    });
    if c.diags.len() > before {
        return None;
    }
    Some(SandboxSettings {
        timeout,
        metadata: s.metadata.clone(),
        env_vars: s.env_vars.clone(),
        auto_pause: s.auto_pause,
    })
}

fn check_pool_bounds(c: &mut Checker, ctx: &str, p: &RawPool) -> (Option<u32>, Option<u32>) {
    let min = count(c, ctx, "min", &p.min, (0, MAX_COUNT));
    let max = count(c, ctx, "max", &p.max, (1, MAX_COUNT));
    if let (Some(lo), Some(hi)) = (min, max)
        && lo > hi
    {
        c.at(
            p.min.referenced,
            format!("{ctx}: min {lo} is greater than max {hi}"),
        );
    }
    (min, max)
}

fn check_target(c: &mut Checker, ctx: &str, t: &RawTarget) -> Option<Target> {
    let metric = c.expr(
        &t.metric,
        &POOL,
        Kind::Number,
        &format!("{ctx}: scale.target.metric"),
    );
    let mut ok = true;
    if !(t.value.value.is_finite() && t.value.value > 0.0) {
        ok = false;
        c.at(
            t.value.referenced,
            format!(
                "{ctx}: scale.target.value must be a number above 0, got {}",
                t.value.value
            ),
        );
    }
    if !(0.0..1.0).contains(&t.tolerance.value) {
        ok = false;
        c.at(
            t.tolerance.referenced,
            format!(
                "{ctx}: scale.target.tolerance must be from 0 to 1 (0.1 = ±10 %), got {}",
                t.tolerance.value
            ),
        );
    }
    metric.filter(|_| ok).map(|metric| Target {
        metric,
        value: t.value.value,
        tolerance: t.tolerance.value,
    })
}

fn check_steps(c: &mut Checker, ctx: &str, raw: &[RawStep]) -> Vec<Step> {
    let mut steps = Vec::new();
    for (i, s) in raw.iter().enumerate() {
        let what = format!("{ctx}: scale.steps[{i}]");
        let change = match (&s.add, &s.remove) {
            (Some(a), None) => count(c, &what, "add", a, (1, MAX_COUNT)).map(i64::from),
            (None, Some(r)) => count(c, &what, "remove", r, (1, MAX_COUNT)).map(|n| -i64::from(n)),
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
    steps
}

fn check_schedules(
    c: &mut Checker,
    ctx: &str,
    p: &RawPool,
    bounds: Option<(u32, u32)>,
) -> Vec<Schedule> {
    let mut schedules = Vec::new();
    for (i, s) in p.schedules.iter().enumerate() {
        let what = format!("{ctx}: schedules[{i}]");
        let tz = s
            .timezone
            .as_ref()
            .map(|t| t.value.as_str())
            .unwrap_or("UTC");
        let cron = match CronSchedule::parse(&s.cron.value, tz) {
            Ok(cron) => cron,
            Err(e) => {
                let loc = match (&s.timezone, e.contains("time zone")) {
                    (Some(t), true) => t.referenced,
                    _ => s.cron.referenced,
                };
                c.at(loc, format!("{what}: {e}"));
                continue;
            }
        };
        if s.min.is_none() && s.max.is_none() {
            c.at(
                s.cron.referenced,
                format!("{what}: set `min`, `max` or both"),
            );
        }
        let min = opt_count(c, &what, "min", &s.min, (0, MAX_COUNT));
        let max = opt_count(c, &what, "max", &s.max, (1, MAX_COUNT));
        let (Some(min), Some(max), Some((pmin, pmax))) = (min, max, bounds) else {
            continue;
        };
        let (emin, emax) = (min.unwrap_or(pmin), max.unwrap_or(pmax));
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
    schedules
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
fn check_labels(
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
    let repeat = duration(
        c,
        &ctx,
        "repeat_interval",
        &a.repeat_interval,
        Duration::from_secs(4 * 3600),
        (SECOND, MONTH),
    );
    let for_ = duration(
        c,
        &ctx,
        "for",
        &a.for_,
        Duration::ZERO,
        (Duration::ZERO, WEEK),
    );
    let keep_firing_for = duration(
        c,
        &ctx,
        "keep_firing_for",
        &a.keep_firing_for,
        Duration::ZERO,
        (Duration::ZERO, WEEK),
    );
    let (severity, labels) = check_labels(c, &ctx, &a.name, &a.severity, &a.labels);
    if c.diags.len() > before {
        return None;
    }
    Some(Alert {
        name: a.name.value.clone(),
        scope: a.scope,
        pool: a.pool.as_ref().map(|p| p.value.clone()),
        when: when?,
        for_,
        keep_firing_for,
        severity,
        labels,
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
            Some(_) => TriggerAction::SetTimeout(duration(
                c,
                &ctx,
                "timeout",
                &t.timeout,
                Duration::ZERO,
                (SECOND, MAX_SANDBOX_TIMEOUT),
            )),
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
    let (severity, labels) = check_labels(c, &ctx, &t.name, &t.severity, &t.labels);
    if c.diags.len() > before {
        return None;
    }
    Some(Trigger {
        name: t.name.value.clone(),
        on,
        pool: t.pool.as_ref().map(|p| p.value.clone()),
        when,
        action,
        severity,
        labels,
        message: message?,
        notify: t.notify.iter().map(|n| n.value.clone()).collect(),
    })
}

#[cfg(test)]
mod tests;
