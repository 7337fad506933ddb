//! The webhook registration endpoints: `/events/webhooks` (create, list) and
//! `/events/webhooks/{id}` (get, patch, delete). Deliveries are the core's outbox and
//! `emulator::delivery`'s job, not this file's.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::Emulator;
use super::extract::{Body, Id, Res, parse_json, reply};
use crate::e2b::{NewWebhook, WebhookPatch};

pub(super) async fn create_webhook(State(emu): State<Emulator>, Body(body): Body) -> Res {
    let req: NewWebhook = parse_json(&body)?;
    Ok(reply(
        StatusCode::CREATED,
        &emu.with_core(|c| c.create_webhook(&req))?,
    ))
}

pub(super) async fn list_webhooks(State(emu): State<Emulator>) -> Res {
    Ok(reply(StatusCode::OK, &emu.with_core(|c| c.list_webhooks())))
}

pub(super) async fn get_webhook(State(emu): State<Emulator>, Id(id): Id) -> Res {
    Ok(reply(
        StatusCode::OK,
        &emu.with_core(|c| c.get_webhook(&id))?,
    ))
}

pub(super) async fn update_webhook(
    State(emu): State<Emulator>,
    Id(id): Id,
    Body(body): Body,
) -> Res {
    let patch: WebhookPatch = parse_json(&body)?;
    Ok(reply(
        StatusCode::OK,
        &emu.with_core(|c| c.update_webhook(&id, &patch))?,
    ))
}

pub(super) async fn delete_webhook(State(emu): State<Emulator>, Id(id): Id) -> Res {
    emu.with_core(|c| c.delete_webhook(&id))?;
    Ok(StatusCode::OK.into_response())
}
