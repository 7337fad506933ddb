//! The rule language: pools, alerts, lifecycle triggers and notifiers, loaded from YAML files
//! into a checked [`RuleSet`]. The format is documented in docs/rules.md.
//!
//! Loading collects every problem across every file, each as `file:line:col: message` naming
//! the rule and the field, and never panics on any input. A `RuleSet` that exists is valid: its
//! expressions compiled and type-checked, its references resolved, its bounds consistent.

mod load;
pub(crate) use load::yaml_message;
pub(crate) mod schedule;
pub mod scopes;
pub(crate) mod template;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::e2b::{EventType, Metadata};
use crate::expr::Expr;
pub use load::load_str;
pub(crate) use load::{is_test_file, load_paths, rule_files_in};
pub use schedule::CronSchedule;
pub use template::Template;

/// Metadata key that marks a sandbox as a member of a pool; poolpilot only ever kills, pauses
/// or times out sandboxes carrying it.
pub const POOL_KEY: &str = "poolpilot_pool";

/// One problem in a rule file. Diagnostics order by file, then line and column as numbers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based; 0 when the problem has no place in the file.
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl Diagnostic {
    /// A problem at a place in `file`; `None` (no place) is line and column 0.
    pub(crate) fn at(
        file: &str,
        place: Option<serde_saphyr::Location>,
        message: String,
    ) -> Diagnostic {
        let (line, column) = place.map(|l| (l.line(), l.column())).unwrap_or((0, 0));
        Diagnostic {
            file: file.to_string(),
            line,
            column,
            message,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

/// Everything poolpilot was told to do.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub pools: Vec<Pool>,
    pub alerts: Vec<Alert>,
    pub triggers: Vec<Trigger>,
    pub notifiers: Vec<Notifier>,
    /// Problems that do not stop the set from loading (`check` prints them), sorted.
    pub warnings: Vec<Diagnostic>,
}

impl RuleSet {
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }
}

/// Where to send notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifierKind {
    Slack,
    Webhook,
    Alertmanager,
    Log,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Notifier {
    pub name: String,
    pub kind: NotifierKind,
    pub url: Option<String>,
}

/// How a new pool member is created.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SandboxSettings {
    pub timeout: Option<Duration>,
    pub metadata: Metadata,
    pub env_vars: BTreeMap<String, String>,
    pub auto_pause: bool,
}

/// What to do while a pool's metrics are missing or stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMissing {
    /// No metric-driven change at all (min, max and schedules still hold).
    Hold,
    /// Scale up on the members that have data; never scale down.
    UpOnly,
}

/// Which sandboxes go first when a pool shrinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Victims {
    /// Lowest recent CPU first; sandboxes without data last.
    IdleFirst,
    Oldest,
    Newest,
}

/// Target tracking: HPA's `ceil(size * value / target)` outside the tolerance band.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub metric: Expr,
    pub value: f64,
    pub tolerance: f64,
    /// When it holds, the members run at their ceiling: demand is unknown and above capacity,
    /// so the pool grows by what its up policies allow (or doubles) and never shrinks.
    pub saturated_when: Expr,
}

/// HPA's `selectPolicy`: of several rate policies, the one allowing the largest change (`max`)
/// or the smallest (`min`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Select {
    Max,
    Min,
}

/// How much one rate policy lets a pool change within its period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// At most this many members added (or removed).
    Pods(u32),
    /// At most this percent of the size at the start of the period.
    Percent(u32),
}

/// One HPA-style rate policy: `{pods: N, per: 15s}` or `{percent: P, per: 15s}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RatePolicy {
    pub limit: RateLimit,
    pub per: Duration,
}

/// A direction's rate policies (never empty) and how one is chosen among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RatePolicies {
    pub select: Select,
    pub rules: Vec<RatePolicy>,
}

/// A step rule: when the condition holds, add (positive) or remove (negative) sandboxes.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub when: Expr,
    pub change: i64,
}

/// A schedule that sets a pool's bounds from its fire time until another schedule fires.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub name: String,
    pub cron: CronSchedule,
    pub min: Option<u32>,
    pub max: Option<u32>,
}

/// Per-direction values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpDown<T> {
    pub up: T,
    pub down: T,
}

/// How a forecast extrapolates a pool's demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictMethod {
    /// Holt's linear trend over the lookback: level plus slope times the horizon.
    Trend,
    /// Seasonal-naive: the demand one season before the forecast time.
    Seasonal,
}

/// What a forecast may do (AWS predictive scaling's two modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictMode {
    /// Record what the forecast would have asked; change nothing.
    ForecastOnly,
    /// Raise the recommendation to the forecast (a floor): never lower it, never scale in.
    ForecastAndScale,
}

/// `scale.predict`: forecast the target's demand `horizon` ahead and raise the floor before a
/// ramp arrives. Only with a `scale.target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Predict {
    pub method: PredictMethod,
    /// How much history the trend is fitted on.
    pub lookback: Duration,
    /// How far ahead the forecast looks (about a boot plus an evaluation).
    pub horizon: Duration,
    /// The period of a seasonal forecast; `None` for a trend.
    pub season: Option<Duration>,
    pub mode: PredictMode,
}

/// A pool of sandboxes poolpilot keeps sized.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub name: String,
    pub template: String,
    pub min: u32,
    pub max: u32,
    pub sandbox: SandboxSettings,
    /// Per-sandbox predicate behind `busy_count` and `busy_ratio`.
    pub busy: Expr,
    pub interval: Duration,
    pub target: Option<Target>,
    pub steps: Vec<Step>,
    pub cooldown: UpDown<Duration>,
    pub stabilization: UpDown<Duration>,
    pub max_step: UpDown<Option<u32>>,
    /// HPA-style rate policies per direction; `None` is no limit.
    pub policies: UpDown<Option<RatePolicies>>,
    pub on_missing: OnMissing,
    pub stale_after: Duration,
    pub victims: Victims,
    pub min_age: Duration,
    pub protect: Option<Expr>,
    pub schedules: Vec<Schedule>,
    /// Forecasting of the target's demand; `None` is purely reactive.
    pub predict: Option<Predict>,
    /// `idle: {min, max}`: size is claimed + idle, the idle count kept in this band.
    pub idle: Option<IdleBand>,
    /// How claims on this pool behave.
    pub claims: ClaimSettings,
    /// Keeping members alive past their E2B timeout.
    pub keepalive: KeepAlive,
    /// Members older than this are rolled: replaced first, then killed.
    pub max_age: Option<Duration>,
    /// `warm: {paused, after}`: idle members beyond `idle.min` paused rather than killed.
    pub warm: Option<Warm>,
    pub dry_run: bool,
}

/// `idle: {min, max}`: how many running, unclaimed members a pool keeps ready for claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleBand {
    pub min: u32,
    pub max: u32,
    /// How long a new member takes to come (a create and an evaluation): the band's floor is
    /// at least the claims expected in that time.
    pub lead: Option<Duration>,
}

/// What happens to a member when its claim is released (or its lease expires).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRelease {
    /// Killed: a used sandbox is dirty (the default).
    #[default]
    Kill,
    /// Back to the idle set, for the next claim.
    Return,
}

/// `claims: {on_release, lease, max_lease}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimSettings {
    pub on_release: OnRelease,
    /// The lease a claim gets when it asks for none.
    pub lease: Duration,
    /// The longest lease a claim or renewal may ask for.
    pub max_lease: Duration,
}

impl Default for ClaimSettings {
    fn default() -> Self {
        ClaimSettings {
            on_release: OnRelease::Kill,
            lease: Duration::from_secs(600),
            max_lease: Duration::from_secs(24 * 3600),
        }
    }
}

/// `keepalive: {enabled, extend_to}`: an unclaimed member whose end comes within `before` of
/// now gets its timeout set to `extend_to` from now (never shortening its life).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    pub enabled: bool,
    pub extend_to: Duration,
    pub before: Duration,
}

impl Default for KeepAlive {
    fn default() -> Self {
        KeepAlive {
            enabled: true,
            extend_to: Duration::from_secs(600),
            before: Duration::from_secs(120),
        }
    }
}

/// `warm: {paused, after}`: up to `paused` idle members kept paused (free, outside the
/// concurrency cap); an idle member beyond `idle.min` for `after` is paused instead of killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Warm {
    pub paused: u32,
    pub after: Duration,
}

impl Pool {
    /// The create request for a new member: the pool's template and sandbox settings, and the
    /// ownership mark poolpilot later checks before it touches the sandbox.
    pub fn create_request(&self) -> crate::e2b::NewSandbox {
        let mut metadata = self.sandbox.metadata.clone();
        metadata.insert(POOL_KEY.into(), self.name.clone());
        crate::e2b::NewSandbox {
            template_id: self.template.clone(),
            timeout: self.sandbox.timeout.map(|t| t.as_secs()),
            metadata: Some(metadata),
            env_vars: (!self.sandbox.env_vars.is_empty()).then(|| self.sandbox.env_vars.clone()),
            auto_pause: self.sandbox.auto_pause.then_some(true),
            ..Default::default()
        }
    }
}

/// What an alert is evaluated over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertScope {
    Sandbox,
    Pool,
    Team,
}

/// An alerting rule: pending -> firing -> resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub name: String,
    pub scope: AlertScope,
    /// Only this pool's sandboxes (sandbox scope) or this pool (pool scope).
    pub pool: Option<String>,
    pub when: Expr,
    pub for_: Duration,
    pub keep_firing_for: Duration,
    pub severity: String,
    pub labels: BTreeMap<String, String>,
    pub message: Template,
    pub notify: Vec<String>,
    pub repeat_interval: Duration,
}

/// What a lifecycle trigger does.
#[derive(Debug, Clone, PartialEq)]
pub enum TriggerAction {
    Alert,
    /// Create a new member in the trigger's pool now.
    Replace,
    SetTimeout(Duration),
    Kill,
    Pause,
}

/// A rule run on lifecycle events.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub name: String,
    pub on: EventType,
    /// Only events of this pool's sandboxes.
    pub pool: Option<String>,
    pub when: Option<Expr>,
    pub action: TriggerAction,
    pub severity: String,
    pub labels: BTreeMap<String, String>,
    pub message: Template,
    pub notify: Vec<String>,
}
