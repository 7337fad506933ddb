//! The sandbox lifecycle: create (with rate limit, cap and Idempotency-Key), kill, pause,
//! resume, connect and timeouts, each emitting its lifecycle event.
//!
//! A sandbox is found by its internal key; its `run_gen` and `timeout_gen` say which
//! scheduled boot, sample and expiry tasks still apply (see [`super::Task`]). Every change
//! of state goes through `spawn`, `kill_key`, `pause_key`, `resume_key` or `move_end`, which
//! keep the running and booted counts of the load model in step; nothing else may change a
//! sandbox's state.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{
    Core, ENVD_VERSION, MAX_TIMEOUT_SECS, Rejection, Res, Task, later, rfc3339, uuid_from,
};
use crate::e2b::{
    EventData, EventType, Execution, LifecycleEvent, Metadata, NewSandbox, Sandbox, SandboxMetric,
    SandboxState, kill_reason,
};
use crate::emulator::scenario::TemplateSpec;

/// The first metric sample of a sandbox appears this long after its start, as on E2B.
const FIRST_SAMPLE_AFTER: Duration = Duration::from_secs(1);

/// One live sandbox, running or paused.
#[derive(Debug, Clone)]
pub(super) struct Sbx {
    /// Internal handle, so scheduled tasks need not hold the string id.
    pub(super) key: u64,
    pub(super) id: String,
    pub(super) client_id: String,
    pub(super) template: String,
    pub(super) alias: Option<String>,
    pub(super) cpu_count: u32,
    pub(super) memory_mb: u32,
    pub(super) disk_mb: u32,
    pub(super) started_at: DateTime<Utc>,
    pub(super) end_at: DateTime<Utc>,
    pub(super) state: SandboxState,
    /// Serving its share of the template's demand (running and past its boot time).
    pub(super) booted: bool,
    /// When the current execution (since create or the last resume) began.
    pub(super) running_since: DateTime<Utc>,
    pub(super) execution_id: String,
    pub(super) metadata: Option<Metadata>,
    pub(super) auto_pause: bool,
    pub(super) envd_access_token: Option<String>,
    /// Bumped on pause and resume: invalidates scheduled boot and sample tasks.
    pub(super) run_gen: u64,
    /// Bumped whenever the end time changes: invalidates scheduled expiries.
    pub(super) timeout_gen: u64,
    pub(super) metrics: VecDeque<SandboxMetric>,
}

/// The sandboxes, live and gone.
#[derive(Default)]
pub(super) struct Sandboxes {
    /// The last key handed out; keys are never reused, so a stale task never hits a newcomer.
    next_key: u64,
    /// Live sandboxes (running or paused) by key, in creation order.
    pub(super) live: BTreeMap<u64, Sbx>,
    /// The key of each live sandbox's id.
    pub(super) by_id: HashMap<String, u64>,
    /// Samples of killed sandboxes, still served by the metrics endpoint.
    pub(super) gone_metrics: HashMap<String, VecDeque<SandboxMetric>>,
}

/// A create answered under an Idempotency-Key.
pub(super) struct IdempotentCreate {
    /// The request as JSON: the same key with another request is a 409.
    fingerprint: String,
    response: Sandbox,
}

/// The end of a lifetime of `secs` seconds from `now`, or the 400 for one over E2B's 24 hours.
fn end_after(now: DateTime<Utc>, secs: u64) -> Res<DateTime<Utc>> {
    check_timeout(secs)?;
    later(now, Duration::from_secs(secs)).ok_or_else(|| {
        Rejection::bad_request("timeout: the sandbox would end past the latest representable time")
    })
}

/// The 400 for a timeout over E2B's 24-hour maximum.
fn check_timeout(secs: u64) -> Res<()> {
    if secs > MAX_TIMEOUT_SECS {
        return Err(Rejection::bad_request(format!(
            "Timeout cannot be greater than {} hours",
            MAX_TIMEOUT_SECS / 3600
        )));
    }
    Ok(())
}

/// Drops E2B's `-<clientID>` suffix; more than one `-` is a 400.
pub(super) fn short_id(raw: &str) -> Res<&str> {
    let mut parts = raw.split('-');
    let id = parts.next().unwrap_or_default();
    let _client = parts.next();
    if parts.next().is_some() {
        return Err(Rejection::bad_request(format!(
            "invalid sandbox ID {raw:?}: expected <sandboxID> or <sandboxID>-<clientID>"
        )));
    }
    Ok(id)
}

/// The 400 for an Idempotency-Key that is not 1 to 255 characters of `[a-z0-9-]`.
fn check_idempotency_key(key: &str) -> Res<()> {
    let valid = (1..=255).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        return Err(Rejection::bad_request(
            "Idempotency-Key must be 1 to 255 characters of [a-z0-9-]",
        ));
    }
    Ok(())
}

impl Core {
    /// `POST /v2/sandboxes` (`v2`, default timeout 300 s, optional Idempotency-Key) and
    /// `POST /sandboxes` (default timeout 15 s).
    pub fn create(
        &mut self,
        req: &NewSandbox,
        v2: bool,
        idempotency_key: Option<&str>,
    ) -> Res<Sandbox> {
        let default_timeout = if v2 { 300 } else { 15 };
        match idempotency_key {
            Some(key) => self.create_idempotent(req, key, default_timeout),
            None => self.create_checked(req, default_timeout),
        }
    }

    /// A create under an Idempotency-Key: the first answer is kept and given again to the
    /// same request; the same key with another request is a 409.
    fn create_idempotent(
        &mut self,
        req: &NewSandbox,
        key: &str,
        default_timeout: u64,
    ) -> Res<Sandbox> {
        check_idempotency_key(key)?;
        let fingerprint = serde_json::to_string(req).unwrap_or_default();
        if let Some(prev) = self.idempotency.get(key) {
            return if prev.fingerprint == fingerprint {
                Ok(prev.response.clone())
            } else {
                Err(Rejection::new(
                    409,
                    "Idempotency-Key was already used with a different request",
                ))
            };
        }
        let sandbox = self.create_checked(req, default_timeout)?;
        let answer = IdempotentCreate {
            fingerprint,
            response: sandbox.clone(),
        };
        self.idempotency.insert(key.to_string(), answer);
        Ok(sandbox)
    }

    fn create_checked(&mut self, req: &NewSandbox, default_timeout: u64) -> Res<Sandbox> {
        if req.template_id.trim().is_empty() {
            return Err(Rejection::bad_request("templateID is required"));
        }
        if self.find_template(&req.template_id).is_none() {
            return Err(Rejection::new(
                404,
                format!("template '{}' not found", req.template_id),
            ));
        }
        check_timeout(req.timeout.unwrap_or(0))?;
        self.take_create_token()?;
        self.check_capacity()?;
        self.spawn(req, default_timeout)
    }

    /// Creates a sandbox with no rate or capacity check.
    pub(super) fn spawn(&mut self, req: &NewSandbox, default_timeout: u64) -> Res<Sandbox> {
        let (tpl_name, tpl) = self.find_template(&req.template_id).ok_or_else(|| {
            Rejection::new(404, format!("template '{}' not found", req.template_id))
        })?;
        let (tpl_name, spec) = (tpl_name.clone(), tpl.spec.clone());
        let end_at = end_after(self.now, req.timeout.unwrap_or(default_timeout))?;
        let sbx = self.new_sbx(req, tpl_name.clone(), &spec, end_at);
        let key = sbx.key;
        self.sandboxes.by_id.insert(sbx.id.clone(), key);
        self.sandboxes.live.insert(key, sbx);
        self.count_running(&tpl_name, 1);
        self.schedule_after(spec.boot.0, Task::Boot { sbx: key, run: 0 });
        self.schedule_after(FIRST_SAMPLE_AFTER, Task::Sample { sbx: key, run: 0 });
        self.schedule(
            end_at,
            Task::Expire {
                sbx: key,
                timeout: 0,
            },
        );
        self.counters.count_create(&tpl_name);
        self.emit(key, EventType::Created, EventData::default());
        Ok(self.sandbox_view(key))
    }

    /// A new running sandbox with fresh ids, drawn from the seeded `rng` in a fixed order.
    fn new_sbx(
        &mut self,
        req: &NewSandbox,
        template: String,
        spec: &TemplateSpec,
        end_at: DateTime<Utc>,
    ) -> Sbx {
        let alias = (req.template_id != template).then(|| req.template_id.clone());
        self.sandboxes.next_key += 1;
        let key = self.sandboxes.next_key;
        let id = loop {
            let id = self.random_id(20);
            if !self.sandboxes.by_id.contains_key(&id) {
                break id;
            }
        };
        let client_id = self.random_id(8);
        let execution_id = uuid_from(&mut self.rng);
        let envd_access_token = req.secure.unwrap_or(false).then(|| self.random_id(32));
        Sbx {
            key,
            id,
            client_id,
            template,
            alias,
            cpu_count: spec.cpu_count,
            memory_mb: spec.memory_mb,
            disk_mb: spec.disk_mb,
            started_at: self.now,
            end_at,
            state: SandboxState::Running,
            booted: false,
            running_since: self.now,
            execution_id,
            metadata: req.metadata.clone().filter(|m| !m.is_empty()),
            auto_pause: req.auto_pause.unwrap_or(false),
            envd_access_token,
            run_gen: 0,
            timeout_gen: 0,
            metrics: VecDeque::new(),
        }
    }

    fn random_id(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| ALPHABET[self.rng.usize(0..ALPHABET.len())] as char)
            .collect()
    }

    /// Resolves an id that may carry E2B's `-<clientID>` suffix.
    pub(super) fn resolve(&self, raw: &str) -> Res<u64> {
        let id = short_id(raw)?;
        self.sandboxes
            .by_id
            .get(id)
            .copied()
            .ok_or_else(|| Rejection::sandbox_not_found(id))
    }

    fn sandbox_view(&self, key: u64) -> Sandbox {
        let s = &self.sandboxes.live[&key];
        Sandbox {
            template_id: s.template.clone(),
            sandbox_id: s.id.clone(),
            client_id: s.client_id.clone(),
            envd_version: ENVD_VERSION.to_string(),
            alias: s.alias.clone(),
            envd_access_token: s.envd_access_token.clone(),
            traffic_access_token: None,
            domain: None,
        }
    }

    fn execution(&self, s: &Sbx) -> Execution {
        Execution {
            started_at: Some(rfc3339(s.running_since)),
            vcpu_count: Some(s.cpu_count),
            memory_mb: Some(s.memory_mb as u64),
            execution_time: Some((self.now - s.running_since).num_milliseconds().max(0) as u64),
            extra: Default::default(),
        }
    }

    /// Records a lifecycle event and queues a delivery to each subscribed, enabled webhook.
    fn emit(&mut self, key: u64, event_type: EventType, mut data: EventData) {
        let Some(s) = self.sandboxes.live.get(&key) else {
            return;
        };
        data.sandbox_metadata = s.metadata.clone();
        let empty = data == EventData::default();
        let event = LifecycleEvent {
            id: uuid_from(&mut self.rng),
            version: Some("v2".to_string()),
            event_type,
            timestamp: self.now,
            event_data: (!empty).then_some(data),
            sandbox_id: s.id.clone(),
            sandbox_build_id: self.templates.get(&s.template).map(|t| t.build_id.clone()),
            sandbox_execution_id: Some(s.execution_id.clone()),
            sandbox_template_id: Some(s.template.clone()),
            sandbox_team_id: Some(self.cfg.team_id.clone()),
            extra: Default::default(),
        };
        self.webhooks.queue_deliveries(&event, &mut self.rng);
        self.events.push_back(event);
    }

    /// [`Task::Expire`]: a running sandbox whose end time is still the one the task was
    /// scheduled for pauses (with auto-pause) or is killed.
    pub(super) fn expire(&mut self, sbx: u64, timeout: u64) {
        let Some(s) = self.sandboxes.live.get(&sbx) else {
            return;
        };
        if s.timeout_gen != timeout || s.state != SandboxState::Running {
            return;
        }
        if s.auto_pause {
            self.pause_key(sbx);
        } else {
            self.kill_key(sbx, kill_reason::TIMEOUT);
        }
    }

    /// Kills a live sandbox: emits `killed`, keeps its samples, counts the kill.
    pub(super) fn kill_key(&mut self, key: u64, reason: &str) -> Option<String> {
        let s = self.sandboxes.live.get(&key)?;
        let data = EventData {
            kill_reason: Some(reason.to_string()),
            execution: Some(self.execution(s)),
            ..Default::default()
        };
        self.unboot(key);
        self.emit(key, EventType::Killed, data);
        let s = self.sandboxes.live.remove(&key)?;
        self.sandboxes.by_id.remove(&s.id);
        if s.state == SandboxState::Running {
            self.count_running(&s.template, -1);
        }
        self.counters.count_kill(&s.template, reason);
        self.sandboxes.gone_metrics.insert(s.id.clone(), s.metrics);
        Some(s.id)
    }

    fn pause_key(&mut self, key: u64) {
        let Some(s) = self.sandboxes.live.get(&key) else {
            return;
        };
        let data = EventData {
            execution: Some(self.execution(s)),
            ..Default::default()
        };
        self.unboot(key);
        if let Some(s) = self.sandboxes.live.get_mut(&key) {
            let template = s.template.clone();
            s.state = SandboxState::Paused;
            s.run_gen += 1;
            s.timeout_gen += 1;
            s.end_at = self.now;
            self.count_running(&template, -1);
        }
        self.emit(key, EventType::Paused, data);
    }

    fn resume_key(&mut self, key: u64, timeout: u64) -> Res<()> {
        let now = self.now;
        let end_at = end_after(now, timeout)?;
        self.check_capacity()?;
        let execution_id = uuid_from(&mut self.rng);
        let (run, tgen, boot, template) = {
            let s = self
                .sandboxes
                .live
                .get_mut(&key)
                .ok_or_else(|| Rejection::new(404, "gone"))?;
            s.state = SandboxState::Running;
            s.run_gen += 1;
            s.timeout_gen += 1;
            s.end_at = end_at;
            s.running_since = now;
            s.execution_id = execution_id;
            (s.run_gen, s.timeout_gen, s.end_at, s.template.clone())
        };
        self.count_running(&template, 1);
        // Resuming from a snapshot is quick; it takes its share of load at once.
        self.schedule(now, Task::Boot { sbx: key, run });
        self.schedule_after(FIRST_SAMPLE_AFTER, Task::Sample { sbx: key, run });
        self.schedule(
            boot,
            Task::Expire {
                sbx: key,
                timeout: tgen,
            },
        );
        self.emit(key, EventType::Resumed, EventData::default());
        Ok(())
    }

    /// `DELETE /sandboxes/{id}`.
    pub(crate) fn kill(&mut self, id: &str) -> Res<()> {
        let key = self.resolve(id)?;
        self.kill_key(key, kill_reason::REQUEST);
        Ok(())
    }

    /// Kills a sandbox as E2B would for another reason (`timeout`, `orphaned`, ...).
    pub fn kill_with_reason(&mut self, id: &str, reason: &str) -> Res<()> {
        let key = self.resolve(id)?;
        self.kill_key(key, reason);
        Ok(())
    }

    /// `POST /sandboxes/{id}/timeout`.
    pub(crate) fn set_timeout(&mut self, id: &str, timeout: u64) -> Res<()> {
        let end = end_after(self.now, timeout)?;
        let key = self.resolve(id)?;
        let s = &self.sandboxes.live[&key];
        if s.state != SandboxState::Running {
            // A paused sandbox is not in the orchestrator, so E2B does not find it.
            return Err(Rejection::sandbox_not_found(&s.id));
        }
        self.move_end(key, end);
        Ok(())
    }

    /// Moves a running sandbox's end time: reschedules its expiry and emits `updated`.
    fn move_end(&mut self, key: u64, end: DateTime<Utc>) {
        let Some(s) = self.sandboxes.live.get_mut(&key) else {
            return;
        };
        s.end_at = end;
        s.timeout_gen += 1;
        let timeout = s.timeout_gen;
        self.schedule(end, Task::Expire { sbx: key, timeout });
        let data = EventData {
            set_timeout: Some(rfc3339(end)),
            ..Default::default()
        };
        self.emit(key, EventType::Updated, data);
    }

    /// How long E2B takes to pause `id`: the scenario's `latency.pause_per_gib` per GiB of
    /// its memory; zero without `latency` or for an unknown sandbox.
    pub fn pause_latency(&self, id: &str) -> Duration {
        let (Some(l), Ok(key)) = (&self.latency, self.resolve(id)) else {
            return Duration::ZERO;
        };
        l.pause(self.sandboxes.live[&key].memory_mb)
    }

    /// How long E2B takes to resume a paused sandbox; zero without `latency`.
    pub fn resume_latency(&self) -> Duration {
        self.latency.as_ref().map_or(Duration::ZERO, |l| l.resume.0)
    }

    /// `POST /sandboxes/{id}/pause`: 409 when already paused.
    pub(crate) fn pause(&mut self, id: &str) -> Res<()> {
        let key = self.resolve(id)?;
        let s = &self.sandboxes.live[&key];
        if s.state == SandboxState::Paused {
            return Err(Rejection::new(
                409,
                format!("Sandbox '{}' is already paused", s.id),
            ));
        }
        self.pause_key(key);
        Ok(())
    }

    /// `POST /sandboxes/{id}/connect`: resumes a paused sandbox (resumed = true), or extends a
    /// running one's end time, never shortening it.
    pub(crate) fn connect(&mut self, id: &str, timeout: u64) -> Res<(Sandbox, bool)> {
        let key = self.resolve(id)?;
        let wanted = end_after(self.now, timeout)?;
        if self.sandboxes.live[&key].state == SandboxState::Paused {
            self.resume_key(key, timeout)?;
            return Ok((self.sandbox_view(key), true));
        }
        if wanted > self.sandboxes.live[&key].end_at {
            self.move_end(key, wanted);
        }
        Ok((self.sandbox_view(key), false))
    }

    /// `POST /sandboxes/{id}/resume` (deprecated): 409 when running.
    pub(crate) fn resume(&mut self, id: &str, timeout: u64) -> Res<Sandbox> {
        let key = self.resolve(id)?;
        if self.sandboxes.live[&key].state == SandboxState::Running {
            return Err(Rejection::new(
                409,
                format!(
                    "Sandbox {} is already running",
                    self.sandboxes.live[&key].id
                ),
            ));
        }
        self.resume_key(key, timeout)?;
        Ok(self.sandbox_view(key))
    }
}
