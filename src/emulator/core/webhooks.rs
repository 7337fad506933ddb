//! Webhook registrations (`/events/webhooks`) and the outbox of deliveries that lifecycle
//! events cause.
//!
//! The core only queues a [`Delivery`] per event and subscribed, enabled webhook; the HTTP
//! layer takes the outbox after each call and `emulator::delivery` posts it. The core must
//! never send anything itself, and a secret never leaves it except inside a delivery.

use std::collections::BTreeMap;

use super::{Core, Rejection, Res, uuid_from};
use crate::e2b::{EventType, LifecycleEvent, NewWebhook, Webhook, WebhookPatch};

/// A webhook as the core keeps it: with its secret, which the API never shows.
#[derive(Debug, Clone)]
struct WebhookRec {
    hook: Webhook,
    secret: String,
}

/// A delivery the HTTP layer should POST: one event to one webhook.
#[derive(Clone)]
pub struct Delivery {
    pub webhook_id: String,
    /// Stays the same across retries of this delivery: receivers deduplicate on it.
    pub delivery_id: String,
    pub url: String,
    pub secret: String,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("webhook_id", &self.webhook_id)
            .field("delivery_id", &self.delivery_id)
            .field("url", &self.url)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// The registered webhooks and what they are owed.
#[derive(Default)]
pub(super) struct Webhooks {
    /// Registrations by id.
    registered: BTreeMap<String, WebhookRec>,
    /// Deliveries queued since the last [`Core::take_outbox`], in the order of their events.
    outbox: Vec<Delivery>,
}

impl Webhooks {
    /// Queues a delivery of `event` to each subscribed, enabled webhook, each with a fresh
    /// delivery id from `rng`.
    pub(super) fn queue_deliveries(&mut self, event: &LifecycleEvent, rng: &mut fastrand::Rng) {
        let targets: Vec<(String, String, String)> = self
            .registered
            .values()
            .filter(|w| w.hook.enabled && w.hook.events.contains(&event.event_type))
            .map(|w| (w.hook.id.clone(), w.hook.url.clone(), w.secret.clone()))
            .collect();
        if targets.is_empty() {
            return;
        }
        let body = serde_json::to_vec(event).unwrap_or_default();
        for (webhook_id, url, secret) in targets {
            let delivery_id = uuid_from(rng);
            self.outbox.push(Delivery {
                webhook_id,
                delivery_id,
                url,
                secret,
                body: body.clone(),
            });
        }
    }
}

/// The 400 for a webhook's name, URL (https, or http on loopback) or event types.
fn check_webhook_fields(url: &str, events: &[EventType], name: &str) -> Res<()> {
    if name.trim().is_empty() {
        return Err(Rejection::bad_request("name must not be empty"));
    }
    check_webhook_url(url)?;
    if events.is_empty() {
        return Err(Rejection::bad_request(
            "events must name at least one event type",
        ));
    }
    if let Some(bad) = events.iter().find(|e| matches!(e, EventType::Other(_))) {
        let known: Vec<&str> = EventType::KNOWN.iter().map(|e| e.as_str()).collect();
        return Err(Rejection::bad_request(format!(
            "unknown event type {:?}; valid types: {}",
            bad.as_str(),
            known.join(", ")
        )));
    }
    Ok(())
}

fn check_webhook_url(url: &str) -> Res<()> {
    let parsed = url::Url::parse(url)
        .map_err(|e| Rejection::bad_request(format!("invalid webhook URL {url:?}: {e}")))?;
    let loopback = match parsed.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(Rejection::bad_request(
            "webhook URL must use https (the emulator also accepts http on loopback)",
        )),
    }
}

fn webhook_not_found(id: &str) -> Rejection {
    Rejection::new(404, format!("webhook '{id}' not found"))
}

impl Core {
    /// Takes the webhook deliveries queued since the last call.
    pub fn take_outbox(&mut self) -> Vec<Delivery> {
        std::mem::take(&mut self.webhooks.outbox)
    }

    /// `POST /events/webhooks`.
    pub fn create_webhook(&mut self, req: &NewWebhook) -> Res<Webhook> {
        check_webhook_fields(&req.url, &req.events, &req.name)?;
        if req.signature_secret.is_empty() {
            return Err(Rejection::bad_request("signatureSecret must not be empty"));
        }
        if self.webhooks.registered.len() >= self.cfg.max_webhooks {
            return Err(Rejection::new(
                429,
                format!(
                    "maximum number of webhooks reached ({})",
                    self.cfg.max_webhooks
                ),
            ));
        }
        let hook = Webhook {
            id: uuid_from(&mut self.rng),
            team_id: self.cfg.team_id.clone(),
            name: req.name.clone(),
            created_at: self.now,
            enabled: req.enabled,
            url: req.url.clone(),
            events: req.events.clone(),
        };
        self.webhooks.registered.insert(
            hook.id.clone(),
            WebhookRec {
                hook: hook.clone(),
                secret: req.signature_secret.clone(),
            },
        );
        Ok(hook)
    }

    /// `GET /events/webhooks`, oldest first.
    pub(crate) fn list_webhooks(&self) -> Vec<Webhook> {
        let mut v: Vec<Webhook> = self
            .webhooks
            .registered
            .values()
            .map(|w| w.hook.clone())
            .collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        v
    }

    /// `GET /events/webhooks/{id}`.
    pub(crate) fn get_webhook(&self, id: &str) -> Res<Webhook> {
        self.webhooks
            .registered
            .get(id)
            .map(|w| w.hook.clone())
            .ok_or_else(|| webhook_not_found(id))
    }

    /// `PATCH /events/webhooks/{id}`: any subset of the fields.
    pub(crate) fn update_webhook(&mut self, id: &str, patch: &WebhookPatch) -> Res<Webhook> {
        let current = self.get_webhook(id)?;
        let url = patch.url.clone().unwrap_or(current.url);
        let events = patch.events.clone().unwrap_or(current.events);
        let name = patch.name.clone().unwrap_or(current.name);
        check_webhook_fields(&url, &events, &name)?;
        if patch.signature_secret.as_deref() == Some("") {
            return Err(Rejection::bad_request("signatureSecret must not be empty"));
        }
        let rec = self
            .webhooks
            .registered
            .get_mut(id)
            .ok_or_else(|| webhook_not_found(id))?;
        rec.hook.url = url;
        rec.hook.events = events;
        rec.hook.name = name;
        if let Some(e) = patch.enabled {
            rec.hook.enabled = e;
        }
        if let Some(s) = &patch.signature_secret {
            rec.secret = s.clone();
        }
        Ok(rec.hook.clone())
    }

    /// `DELETE /events/webhooks/{id}`.
    pub(crate) fn delete_webhook(&mut self, id: &str) -> Res<()> {
        self.webhooks
            .registered
            .remove(id)
            .map(|_| ())
            .ok_or_else(|| webhook_not_found(id))
    }
}
