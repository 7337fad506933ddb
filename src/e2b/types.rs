//! Wire types of the E2B API: sandboxes, metrics, lifecycle events and webhooks.
//!
//! Field names follow the JSON E2B sends (camelCase, with E2B's own `templateID`/`sandboxID`
//! spellings). Types that come from E2B's event producers accept snake_case too and keep
//! unknown fields and unknown event types instead of failing: E2B adds fields without notice,
//! and an agent that drops an event because of a new key loses data.
//!
//! This module only describes shapes; it performs no I/O.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Key/value metadata attached to a sandbox at creation (E2B: `SandboxMetadata`).
pub type Metadata = BTreeMap<String, String>;

/// Body of `POST /v2/sandboxes` and `POST /sandboxes` (E2B: `NewSandbox`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewSandbox {
    /// Template ID or alias to boot from, e.g. `base`.
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// Seconds until the sandbox expires; E2B defaults to 300 on v2 and 15 on v1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Metadata, used by poolpilot to mark the sandboxes it owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// Environment variables set inside the sandbox.
    #[serde(default, rename = "envVars", skip_serializing_if = "Option::is_none")]
    pub env_vars: Option<BTreeMap<String, String>>,
    /// Pause instead of kill when the timeout is reached.
    #[serde(default, rename = "autoPause", skip_serializing_if = "Option::is_none")]
    pub auto_pause: Option<bool>,
    /// v1 only: secure all communication with the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
    /// Whether the sandbox may reach the internet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_internet_access: Option<bool>,
}

/// Answer to a create or connect call (E2B: `Sandbox`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    #[serde(rename = "envdVersion")]
    pub envd_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(
        default,
        rename = "envdAccessToken",
        skip_serializing_if = "Option::is_none"
    )]
    pub envd_access_token: Option<String>,
    #[serde(
        default,
        rename = "trafficAccessToken",
        skip_serializing_if = "Option::is_none"
    )]
    pub traffic_access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// Whether a sandbox runs or is paused (E2B: `SandboxState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    Running,
    Paused,
}

impl SandboxState {
    /// The spelling E2B uses in JSON and query strings.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Running => "running",
            SandboxState::Paused => "paused",
        }
    }
}

/// One sandbox as listed or fetched (E2B: `ListedSandbox` and `SandboxDetail`, which share
/// their required fields; the detail-only fields are optional here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxInfo {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    #[serde(rename = "startedAt")]
    pub started_at: DateTime<Utc>,
    #[serde(rename = "endAt")]
    pub end_at: DateTime<Utc>,
    #[serde(rename = "cpuCount")]
    pub cpu_count: u32,
    #[serde(rename = "memoryMB")]
    pub memory_mb: u32,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    pub state: SandboxState,
    #[serde(rename = "envdVersion")]
    pub envd_version: String,
    #[serde(
        default,
        rename = "envdAccessToken",
        skip_serializing_if = "Option::is_none"
    )]
    pub envd_access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// One metric sample of a sandbox (E2B: `SandboxMetric`). E2B samples every 5 s and all nine
/// fields are required: the Python SDK fails on a sample that lacks one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxMetric {
    /// Deprecated by E2B but still read by both SDKs.
    pub timestamp: DateTime<Utc>,
    #[serde(rename = "timestampUnix")]
    pub timestamp_unix: i64,
    #[serde(rename = "cpuCount")]
    pub cpu_count: u32,
    /// Percent of all the sandbox's cores, 0 to 100.
    #[serde(rename = "cpuUsedPct")]
    pub cpu_used_pct: f64,
    #[serde(rename = "memUsed")]
    pub mem_used: u64,
    #[serde(rename = "memTotal")]
    pub mem_total: u64,
    #[serde(rename = "memCache")]
    pub mem_cache: u64,
    #[serde(rename = "diskUsed")]
    pub disk_used: u64,
    #[serde(rename = "diskTotal")]
    pub disk_total: u64,
}

/// Answer of the batch metrics endpoint `GET /sandboxes/metrics` (E2B: `SandboxesWithMetrics`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SandboxesWithMetrics {
    pub sandboxes: BTreeMap<String, SandboxMetric>,
}

/// Sort direction of `GET /v2/sandboxes` by start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    Asc,
    /// E2B's default: newest first.
    #[default]
    Desc,
}

impl Order {
    pub fn as_str(self) -> &'static str {
        match self {
            Order::Asc => "asc",
            Order::Desc => "desc",
        }
    }
}

/// Filters and paging of `GET /v2/sandboxes`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    /// States to list; empty means both, as E2B does when `state` is absent.
    pub states: Vec<SandboxState>,
    /// Every pair must match the sandbox's metadata.
    pub metadata: Metadata,
    /// Template ID or alias.
    pub template: Option<String>,
    pub order: Option<Order>,
    pub started_after: Option<DateTime<Utc>>,
    /// Page size, 1 to 100 (E2B's default is 100).
    pub limit: Option<u32>,
    /// Cursor from a previous page's `X-Next-Token`.
    pub next_token: Option<String>,
}

/// One page of a cursor-paginated list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// `X-Next-Token`: present only when another page exists.
    pub next_token: Option<String>,
    /// `X-Total-Running`: running sandboxes matching the filters, before paging.
    pub total_running: Option<u64>,
}

/// Result of `connect`: the sandbox, and whether it was resumed from pause (201) or was
/// already running (200).
#[derive(Debug, Clone, PartialEq)]
pub struct Connected {
    pub sandbox: Sandbox,
    pub resumed: bool,
}

/// The lifecycle event types E2B emits. Unknown types are kept as `Other`, never an error.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    Created,
    Killed,
    Updated,
    Paused,
    Resumed,
    Checkpointed,
    Other(String),
}

impl EventType {
    /// Every type E2B documents or emits, in its wire spelling.
    pub const KNOWN: [EventType; 6] = [
        EventType::Created,
        EventType::Killed,
        EventType::Updated,
        EventType::Paused,
        EventType::Resumed,
        EventType::Checkpointed,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            EventType::Created => "sandbox.lifecycle.created",
            EventType::Killed => "sandbox.lifecycle.killed",
            EventType::Updated => "sandbox.lifecycle.updated",
            EventType::Paused => "sandbox.lifecycle.paused",
            EventType::Resumed => "sandbox.lifecycle.resumed",
            EventType::Checkpointed => "sandbox.lifecycle.checkpointed",
            EventType::Other(s) => s,
        }
    }

    /// Parses a wire spelling; anything unknown becomes `Other`.
    pub fn parse(s: &str) -> EventType {
        Self::KNOWN
            .iter()
            .find(|t| t.as_str() == s)
            .cloned()
            .unwrap_or_else(|| EventType::Other(s.to_string()))
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(EventType::parse(&s))
    }
}

/// Why a sandbox was killed, as E2B writes it in `eventData.kill_reason`.
pub mod kill_reason {
    pub const REQUEST: &str = "request";
    pub const TIMEOUT: &str = "timeout";
    pub const ADMIN: &str = "admin";
    pub const ORPHANED: &str = "orphaned";
    pub const BASE_TEMPLATE_MISSING: &str = "base_template_missing";
    pub const UNKNOWN: &str = "unknown";
}

/// `eventData.execution` on killed and paused events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Milliseconds the sandbox ran in this execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_time: Option<u64>,
    /// Fields E2B added that this version does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `eventData` of a lifecycle event (snake_case keys, as E2B writes them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_metadata: Option<Metadata>,
    /// New end time, on `updated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_egress: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<Execution>,
    /// On `killed`: see [`kill_reason`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_reason: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One sandbox lifecycle event, from the events API or a webhook delivery.
///
/// Serialized in camelCase as E2B's docs show; deserialized from camelCase or snake_case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub timestamp: DateTime<Utc>,
    #[serde(default, rename = "eventData", alias = "event_data")]
    pub event_data: Option<EventData>,
    #[serde(rename = "sandboxId", alias = "sandbox_id")]
    pub sandbox_id: String,
    #[serde(
        default,
        rename = "sandboxBuildId",
        alias = "sandbox_build_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub sandbox_build_id: Option<String>,
    #[serde(
        default,
        rename = "sandboxExecutionId",
        alias = "sandbox_execution_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub sandbox_execution_id: Option<String>,
    #[serde(
        default,
        rename = "sandboxTemplateId",
        alias = "sandbox_template_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub sandbox_template_id: Option<String>,
    #[serde(
        default,
        rename = "sandboxTeamId",
        alias = "sandbox_team_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub sandbox_team_id: Option<String>,
    /// Fields this version does not know, kept so nothing is lost when re-serialized.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl LifecycleEvent {
    /// The kill reason of a killed event, if present.
    pub fn kill_reason(&self) -> Option<&str> {
        self.event_data.as_ref()?.kill_reason.as_deref()
    }

    /// The sandbox's metadata as carried by the event, if any.
    pub fn metadata(&self) -> Option<&Metadata> {
        self.event_data.as_ref()?.sandbox_metadata.as_ref()
    }
}

/// Paging and filters of `GET /events/sandboxes[/{id}]`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventQuery {
    pub offset: u64,
    /// 1 to 100; E2B's default is 10.
    pub limit: u32,
    /// Oldest first when true; E2B's default is newest first.
    pub order_asc: bool,
    /// Only these types; empty means all.
    pub types: Vec<EventType>,
}

impl Default for EventQuery {
    fn default() -> Self {
        EventQuery {
            offset: 0,
            limit: 100,
            order_asc: false,
            types: Vec::new(),
        }
    }
}

/// A registered webhook as E2B shows it; the signature secret is never returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: String,
    #[serde(rename = "teamId", alias = "teamID")]
    pub team_id: String,
    pub name: String,
    #[serde(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
    pub enabled: bool,
    pub url: String,
    pub events: Vec<EventType>,
}

/// Body of `POST /events/webhooks`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct NewWebhook {
    pub name: String,
    pub url: String,
    pub enabled: bool,
    pub events: Vec<EventType>,
    #[serde(rename = "signatureSecret")]
    pub signature_secret: String,
}

impl fmt::Debug for NewWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewWebhook")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("enabled", &self.enabled)
            .field("events", &self.events)
            .field("signature_secret", &"[redacted]")
            .finish()
    }
}

/// Body of `PATCH /events/webhooks/{id}`: any subset of the fields.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WebhookPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<EventType>>,
    #[serde(
        default,
        rename = "signatureSecret",
        skip_serializing_if = "Option::is_none"
    )]
    pub signature_secret: Option<String>,
}

impl fmt::Debug for WebhookPatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookPatch")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("enabled", &self.enabled)
            .field("events", &self.events)
            .field(
                "signature_secret",
                &self.signature_secret.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// The JSON body of every non-2xx answer (E2B: `Error`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: u16,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_parses_camel_case_as_documented() {
        let raw = r#"{"version":"v1","id":"30b09e11","type":"sandbox.lifecycle.updated",
            "eventData":{"set_timeout":"2025-08-06T20:59:59Z"},"sandboxBuildId":"b",
            "sandboxExecutionId":"x","sandboxId":"sbx1","sandboxTeamId":"t",
            "sandboxTemplateId":"tpl","timestamp":"2025-08-06T20:59:29Z"}"#;
        let ev: LifecycleEvent = serde_json::from_str(raw).unwrap();
        assert_eq!(ev.event_type, EventType::Updated);
        assert_eq!(ev.sandbox_id, "sbx1");
        assert_eq!(
            ev.event_data.unwrap().set_timeout.as_deref(),
            Some("2025-08-06T20:59:59Z")
        );
        assert!(ev.extra.is_empty());
    }

    #[test]
    fn event_parses_snake_case_as_delivered() {
        let raw = r#"{"version":"v2","id":"e1","type":"sandbox.lifecycle.killed",
            "event_data":{"kill_reason":"timeout","execution":{"execution_time":1500,"vcpu_count":2}},
            "sandbox_id":"sbx2","sandbox_template_id":"base","timestamp":"2025-08-06T20:59:29Z"}"#;
        let ev: LifecycleEvent = serde_json::from_str(raw).unwrap();
        assert_eq!(ev.sandbox_id, "sbx2");
        assert_eq!(ev.kill_reason(), Some("timeout"));
        assert_eq!(ev.sandbox_template_id.as_deref(), Some("base"));
        let exec = ev.event_data.unwrap().execution.unwrap();
        assert_eq!(exec.execution_time, Some(1500));
    }

    #[test]
    fn unknown_types_and_fields_are_kept() {
        let raw = r#"{"id":"e3","type":"sandbox.lifecycle.teleported","timestamp":"2025-08-06T20:59:29Z",
            "sandboxId":"s","eventData":{"warp":9,"kill_reason":"unknown"},"brandNew":{"a":1}}"#;
        let ev: LifecycleEvent = serde_json::from_str(raw).unwrap();
        assert_eq!(
            ev.event_type,
            EventType::Other("sandbox.lifecycle.teleported".into())
        );
        assert_eq!(ev.extra.get("brandNew"), Some(&serde_json::json!({"a":1})));
        let again = serde_json::to_value(&ev).unwrap();
        assert_eq!(again["type"], "sandbox.lifecycle.teleported");
        assert_eq!(again["brandNew"]["a"], 1);
        assert_eq!(again["eventData"]["warp"], 9);
    }

    #[test]
    fn null_event_data_is_none() {
        let raw = r#"{"id":"e","type":"sandbox.lifecycle.created","eventData":null,
            "sandboxId":"s","timestamp":"2025-08-06T20:59:24Z"}"#;
        let ev: LifecycleEvent = serde_json::from_str(raw).unwrap();
        assert!(ev.event_data.is_none());
    }

    #[test]
    fn webhook_secrets_never_show_in_debug() {
        let w = NewWebhook {
            name: "n".into(),
            url: "https://x".into(),
            enabled: true,
            events: vec![EventType::Created],
            signature_secret: "topsecret".into(),
        };
        assert!(!format!("{w:?}").contains("topsecret"));
        let p = WebhookPatch {
            signature_secret: Some("topsecret".into()),
            ..Default::default()
        };
        assert!(!format!("{p:?}").contains("topsecret"));
    }
}
