//! The read side of the API: list (filters, order and E2B's pagination cursor), get,
//! metrics of one sandbox or a batch, and the lifecycle events API.
//!
//! Queries take `&self`: they never change the core, draw randomness or move time, so
//! reading never changes what happens next.

use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::{BTreeMap, VecDeque};

use super::sandboxes::{Sbx, short_id};
use super::{Core, ENVD_VERSION, Rejection, Res};
use crate::e2b::{
    EventQuery, LifecycleEvent, ListQuery, Order, Page, SandboxInfo, SandboxMetric, SandboxState,
};

/// The 400 for a page size outside 1..=100, worded like E2B's request validator.
fn limit_error(limit: u32) -> Rejection {
    let bound = if limit < 1 {
        "at least 1"
    } else {
        "at most 100"
    };
    Rejection::bad_request(format!(
        "parameter \"limit\" in query has an error: number must be {bound}"
    ))
}

/// E2B's list cursor: base64url of `<startedAt RFC3339Nano>__<sandboxID>`.
fn make_cursor(started_at: DateTime<Utc>, id: &str) -> String {
    URL_SAFE.encode(format!(
        "{}__{}",
        started_at.to_rfc3339_opts(SecondsFormat::Nanos, true),
        id
    ))
}

fn parse_cursor(token: &str) -> Option<(DateTime<Utc>, String)> {
    let bytes = URL_SAFE
        .decode(token)
        .or_else(|_| URL_SAFE_NO_PAD.decode(token))
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (t, id) = text.split_once("__")?;
    if id.is_empty() || id.contains("__") {
        return None;
    }
    let t = DateTime::parse_from_rfc3339(t).ok()?.with_timezone(&Utc);
    Some((t, id.to_string()))
}

/// Where the page after `token` starts in `items` (sorted in `order`): the first item past
/// the cursor's (startedAt, id), so a page is stable while sandboxes come and go.
fn after_cursor(items: &[&Sbx], token: &str, order: Order) -> Res<usize> {
    let (t, id) =
        parse_cursor(token).ok_or_else(|| Rejection::bad_request("Invalid next token"))?;
    let start = items
        .iter()
        .position(|s| {
            let k = (s.started_at, s.id.as_str());
            match order {
                Order::Asc => k > (t, id.as_str()),
                Order::Desc => k < (t, id.as_str()),
            }
        })
        .unwrap_or(items.len());
    Ok(start)
}

/// Keeps the last sample of each bucket: E2B's coarser resolution over long ranges.
fn bucketed(chosen: Vec<&SandboxMetric>) -> Vec<SandboxMetric> {
    let span = match (chosen.first(), chosen.last()) {
        (Some(a), Some(b)) => b.timestamp_unix - a.timestamp_unix,
        _ => 0,
    };
    let bucket = match span {
        s if s < 3600 => 0,
        s if s < 6 * 3600 => 30,
        s if s < 12 * 3600 => 60,
        _ => 300,
    };
    if bucket == 0 {
        return chosen.into_iter().cloned().collect();
    }
    let mut out: Vec<SandboxMetric> = Vec::new();
    for m in chosen {
        let b = m.timestamp_unix.div_euclid(bucket);
        match out.last_mut() {
            Some(last) if last.timestamp_unix.div_euclid(bucket) == b => *last = m.clone(),
            _ => out.push(m.clone()),
        }
    }
    out
}

impl Core {
    /// `GET /sandboxes/{id}`.
    pub fn get(&self, id: &str) -> Res<SandboxInfo> {
        let key = self.resolve(id)?;
        Ok(self.info_view(&self.sandboxes.live[&key]))
    }

    fn info_view(&self, s: &Sbx) -> SandboxInfo {
        SandboxInfo {
            template_id: s.template.clone(),
            alias: s.alias.clone(),
            sandbox_id: s.id.clone(),
            client_id: s.client_id.clone(),
            started_at: s.started_at,
            end_at: s.end_at,
            cpu_count: s.cpu_count,
            memory_mb: s.memory_mb,
            disk_size_mb: s.disk_mb,
            metadata: s.metadata.clone(),
            state: s.state,
            envd_version: ENVD_VERSION.to_string(),
            envd_access_token: s.envd_access_token.clone(),
            domain: None,
        }
    }

    /// `GET /v2/sandboxes`: filters, sorts by start time, and pages with E2B's cursor.
    pub fn list(&self, q: &ListQuery) -> Res<Page<SandboxInfo>> {
        let limit = q.limit.unwrap_or(100);
        if !(1..=100).contains(&limit) {
            return Err(limit_error(limit));
        }
        let order = q.order.unwrap_or_default();
        let items = self.matching(q, order);
        let total_running = (q.states.is_empty() || q.states.contains(&SandboxState::Running))
            .then(|| {
                items
                    .iter()
                    .filter(|s| s.state == SandboxState::Running)
                    .count() as u64
            });
        let start = match &q.next_token {
            Some(token) => after_cursor(&items, token, order)?,
            None => 0,
        };
        let end = (start + limit as usize).min(items.len());
        let page: Vec<SandboxInfo> = items[start..end]
            .iter()
            .map(|s| self.info_view(s))
            .collect();
        let next_token = (end < items.len())
            .then(|| {
                page.last()
                    .map(|s| make_cursor(s.started_at, &s.sandbox_id))
            })
            .flatten();
        Ok(Page {
            items: page,
            next_token,
            total_running,
        })
    }

    /// The sandboxes that pass the list's filters, sorted by (startedAt, id) in `order`.
    fn matching(&self, q: &ListQuery, order: Order) -> Vec<&Sbx> {
        let template_key = q.template.as_ref().map(|t| {
            self.find_template(t)
                .map(|(k, _)| k.clone())
                .unwrap_or_else(|| t.clone())
        });
        let mut items: Vec<&Sbx> = self
            .sandboxes
            .live
            .values()
            .filter(|s| q.states.is_empty() || q.states.contains(&s.state))
            .filter(|s| template_key.as_ref().is_none_or(|t| &s.template == t))
            .filter(|s| q.started_after.is_none_or(|t| s.started_at >= t))
            .filter(|s| {
                q.metadata
                    .iter()
                    .all(|(k, v)| s.metadata.as_ref().and_then(|m| m.get(k)) == Some(v))
            })
            .collect();
        items.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        if order == Order::Desc {
            items.reverse();
        }
        items
    }

    /// `GET /sandboxes/{id}/metrics`: samples in [start, end], bucketed like E2B over long ranges.
    pub(crate) fn metrics(
        &self,
        id: &str,
        start: Option<i64>,
        end: Option<i64>,
    ) -> Res<Vec<SandboxMetric>> {
        let short = short_id(id)?;
        if let (Some(s), Some(e)) = (start, end)
            && s > e
        {
            return Err(Rejection::bad_request(
                "start time cannot be after end time",
            ));
        }
        let chosen: Vec<&SandboxMetric> = self
            .samples_of(short)?
            .iter()
            .filter(|m| start.is_none_or(|s| m.timestamp_unix >= s))
            .filter(|m| end.is_none_or(|e| m.timestamp_unix <= e))
            .collect();
        Ok(bucketed(chosen))
    }

    /// The samples of a sandbox, live or killed.
    fn samples_of(&self, short: &str) -> Res<&VecDeque<SandboxMetric>> {
        match self.sandboxes.by_id.get(short) {
            Some(k) => Ok(&self.sandboxes.live[k].metrics),
            None => self
                .sandboxes
                .gone_metrics
                .get(short)
                .ok_or_else(|| Rejection::sandbox_not_found(short)),
        }
    }

    /// `GET /sandboxes/metrics`: the latest sample of each live sandbox asked for.
    pub(crate) fn metrics_batch(&self, ids: &[String]) -> Res<BTreeMap<String, SandboxMetric>> {
        if ids.len() > 100 {
            return Err(Rejection::bad_request(
                "Too many sandboxes requested, maximum is 100",
            ));
        }
        let mut out = BTreeMap::new();
        for raw in ids {
            let id = short_id(raw)?;
            if let Some(k) = self.sandboxes.by_id.get(id)
                && let Some(m) = self.sandboxes.live[k].metrics.back()
            {
                out.insert(id.to_string(), m.clone());
            }
        }
        Ok(out)
    }

    /// `GET /events/sandboxes` (all) or `GET /events/sandboxes/{id}` (`sandbox` given).
    pub fn events(&self, sandbox: Option<&str>, q: &EventQuery) -> Res<Vec<LifecycleEvent>> {
        if !(1..=100).contains(&q.limit) {
            return Err(limit_error(q.limit));
        }
        let sandbox = sandbox.map(short_id).transpose()?;
        let matches = |e: &&LifecycleEvent| {
            sandbox.is_none_or(|id| e.sandbox_id == id)
                && (q.types.is_empty() || q.types.contains(&e.event_type))
        };
        let offset = usize::try_from(q.offset).unwrap_or(usize::MAX);
        let limit = q.limit as usize;
        let page: Vec<LifecycleEvent> = if q.order_asc {
            self.events
                .iter()
                .filter(matches)
                .skip(offset)
                .take(limit)
                .cloned()
                .collect()
        } else {
            self.events
                .iter()
                .rev()
                .filter(matches)
                .skip(offset)
                .take(limit)
                .cloned()
                .collect()
        };
        Ok(page)
    }
}
