//! A world in virtual time: the emulator core playing a scenario, E2B as the agent meets it
//! ([`Modeled`]), and the real agent with its real webhook receiver. `simulate` drives one;
//! nothing in it decides or acts on its own: every create, kill, retry and count of creates in
//! flight is the agent's own code, the same as `poolpilot run` runs.
//!
//! Webhooks go the way E2B sends them: the core's outbox, signed, POSTed to the receiver (in
//! process, through its router), verified, deduplicated and handed to the agent, which reacts.
//!
//! [`InProcessAgent`] is that wiring on its own (the agent, its receiver, its dedup window, an
//! optional state dir), for any [`E2bApi`]: the seeded simulation harness (tests/simulation.rs)
//! starts, crashes and restarts it over a faulty API, so both run the same agent the same way.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tower::ServiceExt;

use super::api::Modeled;
use crate::agent::control::{Agent, AgentOptions, TickReport};
use crate::agent::dedup::Dedup;
use crate::agent::http::webhooks::{self, Delivered, WebhookConfig, WebhookStats};
use crate::e2b::{E2bApi, EventType, NewWebhook, signature};
use crate::emulator::core::Delivery;
use crate::emulator::{Core, CoreConfig, Scenario};
use crate::rules::RuleSet;
use crate::sync::lock;

/// The secret the world's webhook is signed with; never leaves the process.
const SECRET: &str = "simulate";
/// Deliveries the receiver may queue for the agent before it answers 503 (E2B then retries).
const QUEUE: usize = 100_000;
/// Event ids the receiver remembers.
const SEEN: usize = 1_000_000;

/// The core, the API over it, and the agent with its receiver.
pub struct World {
    pub core: Arc<Mutex<Core>>,
    pub api: Arc<Modeled>,
    pub agent: Agent,
    receiver: Receiver,
    /// Deliveries the receiver refused for now (a full queue): sent again at the next turn.
    retry: Vec<Delivery>,
}

/// The agent's webhook receiver, reached through its router with no socket.
#[derive(Clone)]
pub struct Receiver(axum::Router);

impl Receiver {
    /// POSTs one delivery, signed with its secret as E2B signs it; the receiver's answer.
    pub async fn post(&self, d: &Delivery) -> axum::http::StatusCode {
        let req = axum::http::Request::post("/webhooks/e2b")
            .header("content-type", "application/json")
            .header("e2b-webhook-id", &d.webhook_id)
            .header("e2b-delivery-id", &d.delivery_id)
            .header("e2b-signature-version", "v1")
            .header("e2b-signature", signature::sign(&d.secret, &d.body))
            .body(axum::body::Body::from(d.body.clone()));
        let Ok(req) = req else {
            return axum::http::StatusCode::BAD_REQUEST;
        };
        match self.0.clone().oneshot(req).await {
            Ok(r) => r.status(),
            Err(never) => match never {},
        }
    }
}

/// The agent as `poolpilot run` wires it, in process: the agent over `api`, and its webhook
/// receiver feeding it through the same bounded queue and dedup window.
pub struct InProcessAgent {
    pub agent: Agent,
    pub receiver: Receiver,
}

/// How an [`InProcessAgent`] is set up.
pub struct AgentWiring {
    /// The secret the receiver verifies signatures with.
    pub secret: String,
    /// The receiver's clock (for the age of deliveries): virtual time in a simulation.
    pub clock: webhooks::Clock,
    /// How often the agent reads the events API besides its webhooks.
    pub events_every: Duration,
    /// Where state.json and the journal live; None keeps everything in memory.
    pub state_dir: Option<PathBuf>,
}

impl InProcessAgent {
    /// Starts the agent (resuming from the state dir, if any) and its receiver.
    pub fn start(
        api: Arc<dyn E2bApi>,
        rules: Arc<RuleSet>,
        wiring: AgentWiring,
    ) -> std::io::Result<InProcessAgent> {
        let dedup = Arc::new(Mutex::new(Dedup::new(SEEN)));
        let (tx, rx) = mpsc::channel::<Delivered>(QUEUE);
        let mut cfg = WebhookConfig::new(wiring.secret);
        cfg.clock = wiring.clock.clone();
        let router = webhooks::router(cfg, tx, dedup.clone(), Arc::new(WebhookStats::default()));
        let agent = Agent::new(
            api,
            rules,
            AgentOptions {
                dispatcher: None,
                webhooks: Some(rx),
                dedup,
                events_every: wiring.events_every,
                dry_run: false,
                state_dir: wiring.state_dir,
                clock: Some(wiring.clock),
            },
        )?;
        Ok(InProcessAgent {
            agent,
            receiver: Receiver(router),
        })
    }
}

/// How the agent in a world is set up.
pub struct AgentSetup {
    /// How often the agent reads the events API besides its webhooks.
    pub events_every: Duration,
}

impl World {
    /// Starts `scenario` at `start` and an agent with `rules` over it. Must run inside a tokio
    /// runtime (the receiver's channel and the agent's tasks live there).
    pub fn new(
        rules: Arc<RuleSet>,
        scenario: &Scenario,
        core: CoreConfig,
        start: DateTime<Utc>,
        setup: AgentSetup,
    ) -> World {
        let create_rate = core.create_rate;
        let mut core = Core::new(core, scenario, start);
        // The webhook E2B would call; its URL is never dialled, deliveries are taken from the
        // outbox. A fresh core always has room for one webhook.
        let _ = core.create_webhook(&NewWebhook {
            name: "poolpilot".into(),
            url: "http://127.0.0.1:9/webhooks/e2b".into(),
            enabled: true,
            events: EventType::KNOWN.to_vec(),
            signature_secret: SECRET.into(),
        });
        let core = Arc::new(Mutex::new(core));
        let api = Arc::new(Modeled::new(core.clone(), scenario, create_rate));
        let clock = api.clone();
        let as_api: Arc<dyn E2bApi> = api.clone();
        let wiring = AgentWiring {
            secret: SECRET.into(),
            clock: Arc::new(move || clock.now()),
            events_every: setup.events_every,
            state_dir: None,
        };
        let started = InProcessAgent::start(as_api, rules, wiring)
            .unwrap_or_else(|e| unreachable!("an agent without a state dir opens no file: {e}"));
        World {
            core,
            api,
            agent: started.agent,
            receiver: started.receiver,
            retry: Vec::new(),
        }
    }

    /// The virtual now.
    pub fn now(&self) -> DateTime<Utc> {
        self.api.now()
    }

    /// Brings the core to now and POSTs its pending webhook deliveries to the receiver;
    /// the agent reacts when any was new. None when nothing was delivered.
    pub async fn deliver_webhooks(&mut self) -> Option<TickReport> {
        self.api.sync();
        let mut due = std::mem::take(&mut self.retry);
        due.extend(lock(&self.core).take_outbox());
        if due.is_empty() {
            return None;
        }
        for d in due {
            if !self.post(&d).await {
                self.retry.push(d);
            }
        }
        let now = self.now();
        Some(self.agent.react(now).await)
    }

    /// One delivery through the receiver; false when it should be sent again (E2B retries a
    /// 5xx answer).
    async fn post(&self, d: &Delivery) -> bool {
        !self.receiver.post(d).await.is_server_error()
    }

    /// The agent's tick at the virtual now.
    pub async fn tick(&mut self) -> TickReport {
        self.api.sync();
        let now = self.now();
        self.agent.tick(now).await
    }
}
