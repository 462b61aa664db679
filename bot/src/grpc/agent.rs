//! `bankbot.v1.AgentService` over tonic: the human agents' side of a
//! hand-over. The guard admits only the `agent` role; the work is in
//! `service::agents` and `escalation`. Admission (in-flight and stream
//! limits) is shared with ConversationService.

use std::pin::Pin;
use std::time::Duration;

use bankbot_proto::v1 as pb;
use bankbot_proto::v1::agent_service_server::AgentService;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::guard::principal;
use super::service::ConversationApi;
use super::{convert, status};
use crate::auth::Principal;
use crate::escalation::QueueChange;
use crate::service::agents::Caller;
use crate::store::{Availability, Message, Ticket};

/// Waiting tickets in one snapshot, at most.
const SNAPSHOT_LIMIT: i64 = 500;
/// A watcher gets a fresh snapshot this often, so tickets enqueued on
/// another replica (embedded backend) reach it too.
const RESNAPSHOT: Duration = Duration::from_secs(10);

type QueueStream = Pin<Box<dyn Stream<Item = Result<pb::QueueEvent, Status>> + Send>>;
type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ConversationEvent, Status>> + Send>>;

#[derive(Debug, Clone)]
pub struct AgentApi {
    api: ConversationApi,
}

impl AgentApi {
    pub fn new(api: ConversationApi) -> Self {
        Self { api }
    }
}

fn caller(p: &Principal) -> Caller<'_> {
    Caller {
        id: &p.subject,
        allowed: p.skills.as_deref(),
    }
}

fn claim_response(found: Option<(Ticket, Vec<Message>)>) -> pb::ClaimResponse {
    pb::ClaimResponse {
        ticket: found.map(|(t, transcript)| convert::ticket(&t, &transcript)),
    }
}

fn status_of(agent: &crate::store::Agent, held: &[Ticket]) -> pb::AgentStatus {
    pb::AgentStatus {
        agent_id: agent.id.clone(),
        availability: convert::availability(agent.availability).into(),
        skills: agent.skills.clone(),
        max_concurrent: agent.max_concurrent,
        claimed_ticket_ids: held.iter().map(|t| t.id.clone()).collect(),
    }
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    #[tracing::instrument(name = "SetAvailability", skip_all, fields(agent_id))]
    async fn set_availability(
        &self,
        req: Request<pb::SetAvailabilityRequest>,
    ) -> Result<Response<pb::AgentStatus>, Status> {
        let who = principal(&req)?;
        let conv = self.api.ready()?;
        let _permit = self.api.admit()?;
        let r = req.into_inner();
        let availability = match pb::Availability::try_from(r.availability) {
            Ok(pb::Availability::Available) => Availability::Available,
            Ok(pb::Availability::Busy) => Availability::Busy,
            Ok(pb::Availability::Offline) => Availability::Offline,
            _ => {
                return Err(self.api.fail(status::invalid(
                    "availability",
                    "AVAILABILITY_INVALID",
                    "must be AVAILABLE, BUSY or OFFLINE",
                )));
            }
        };
        let (agent, held) = conv
            .set_availability(caller(&who), availability, r.skills, r.max_concurrent)
            .await
            .map_err(|e| self.api.service_error(e))?;
        tracing::info!(agent_id = %who.subject, availability = agent.availability.as_str(), "availability");
        Ok(Response::new(status_of(&agent, &held)))
    }

    type WatchQueueStream = QueueStream;

    #[tracing::instrument(name = "WatchQueue", skip_all)]
    async fn watch_queue(
        &self,
        req: Request<pb::WatchQueueRequest>,
    ) -> Result<Response<Self::WatchQueueStream>, Status> {
        let who = principal(&req)?;
        let conv = self.api.ready()?;
        let ticket = self.api.stream_ticket(&who.subject)?;
        // Subscribe before the snapshot, so nothing in between is missed.
        let mut changes = conv.escalations().watch();
        let mut shutdown = self.api.shutdown();
        let stream = async_stream::stream! {
            let _ticket = ticket;
            let mut snapshot = true;
            let mut resnapshot = tokio::time::interval(RESNAPSHOT);
            resnapshot.tick().await;
            loop {
                if snapshot {
                    snapshot = false;
                    match conv.waiting_for(caller(&who), SNAPSHOT_LIMIT).await {
                        Ok(tickets) => yield Ok(pb::QueueEvent {
                            kind: Some(pb::queue_event::Kind::Snapshot(pb::QueueSnapshot {
                                tickets: tickets.iter().map(convert::ticket_summary).collect(),
                            })),
                        }),
                        Err(e) => {
                            yield Err(status::from_service(e));
                            return;
                        }
                    }
                }
                tokio::select! {
                    changed = shutdown.changed() => {
                        if changed.is_err() || *shutdown.borrow() {
                            yield Err(status::shutting_down());
                            return;
                        }
                    }
                    _ = resnapshot.tick() => snapshot = true,
                    change = changes.recv() => match change {
                        Ok(QueueChange::Queued(t)) => {
                            // Skills may have changed since the snapshot.
                            let may = match conv.agent(caller(&who)).await {
                                Ok(a) => a.skills.contains(&t.skill),
                                Err(_) => false,
                            };
                            if may {
                                yield Ok(pb::QueueEvent {
                                    kind: Some(pb::queue_event::Kind::Queued(convert::ticket_summary(&t))),
                                });
                            }
                        }
                        Ok(QueueChange::Gone { ticket_id, skill, state }) => {
                            if caller(&who).allowed.is_none_or(|a| a.contains(&skill)) {
                                yield Ok(pb::QueueEvent {
                                    kind: Some(pb::queue_event::Kind::Gone(pb::TicketGone {
                                        ticket_id,
                                        state: convert::ticket_state(state).into(),
                                    })),
                                });
                            }
                        }
                        Err(RecvError::Lagged(_)) => snapshot = true,
                        Err(RecvError::Closed) => return,
                    },
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(name = "ClaimNext", skip_all, fields(ticket_id))]
    async fn claim_next(
        &self,
        req: Request<pb::ClaimNextRequest>,
    ) -> Result<Response<pb::ClaimResponse>, Status> {
        let who = principal(&req)?;
        let conv = self.api.ready()?;
        let _permit = self.api.admit()?;
        let found = conv
            .claim_next(caller(&who))
            .await
            .map_err(|e| self.api.service_error(e))?;
        if let Some((t, _)) = &found {
            tracing::Span::current().record("ticket_id", t.id.as_str());
            tracing::info!(agent_id = %who.subject, ticket_id = %t.id, "claimed");
        }
        Ok(Response::new(claim_response(found)))
    }

    #[tracing::instrument(name = "Claim", skip_all, fields(ticket_id = %req.get_ref().ticket_id))]
    async fn claim(
        &self,
        req: Request<pb::ClaimRequest>,
    ) -> Result<Response<pb::ClaimResponse>, Status> {
        let who = principal(&req)?;
        let conv = self.api.ready()?;
        let _permit = self.api.admit()?;
        let r = req.into_inner();
        let found = conv
            .claim(caller(&who), &r.ticket_id)
            .await
            .map_err(|e| self.api.service_error(e))?;
        tracing::info!(agent_id = %who.subject, ticket_id = %r.ticket_id, "claimed");
        Ok(Response::new(claim_response(Some(found))))
    }

    #[tracing::instrument(name = "RenewClaim", skip_all, fields(ticket_id = %req.get_ref().ticket_id))]
    async fn renew_claim(
        &self,
        req: Request<pb::RenewClaimRequest>,
    ) -> Result<Response<pb::ClaimResponse>, Status> {
        let who = principal(&req)?;
        let conv = self.api.ready()?;
        let _permit = self.api.admit()?;
        let r = req.into_inner();
        let found = conv
            .renew(caller(&who), &r.ticket_id)
            .await
            .map_err(|e| self.api.service_error(e))?;
        Ok(Response::new(claim_response(Some(found))))
    }

    #[tracing::instrument(name = "GetTicket", skip_all, fields(ticket_id = %req.get_ref().ticket_id))]
    async fn get_ticket(
        &self,
        req: Request<pb::GetTicketRequest>,
    ) -> Result<Response<pb::Ticket>, Status> {
        let who = principal(&req)?;
        let conv = self.api.ready()?;
        let _permit = self.api.admit()?;
        let r = req.into_inner();
        let (t, transcript) = conv
            .ticket_for(caller(&who), &r.ticket_id)
            .await
            .map_err(|e| self.api.service_error(e))?;
        Ok(Response::new(convert::ticket(&t, &transcript)))
    }

    type StreamConversationStream = EventStream;

    #[tracing::instrument(name = "StreamConversation", skip_all, fields(ticket_id = %req.get_ref().ticket_id))]
    async fn stream_conversation(
        &self,
        req: Request<pb::StreamConversationRequest>,
    ) -> Result<Response<Self::StreamConversationStream>, Status> {
        let who = principal(&req)?;
        let conv = self.api.ready()?;
        let r = req.into_inner();
        let ticket = self.api.stream_ticket(&who.subject)?;
        let conversation = {
            let _permit = self.api.admit()?;
            conv.held_conversation(caller(&who), &r.ticket_id)
                .await
                .map_err(|e| self.api.service_error(e))?
        };
        let stream = self
            .api
            .open_stream(conv, &conversation, r.after_sequence, None, ticket)?;
        Ok(Response::new(stream))
    }

    #[tracing::instrument(name = "SendAgentMessage", skip_all, fields(ticket_id = %req.get_ref().ticket_id))]
    async fn send_agent_message(
        &self,
        req: Request<pb::SendAgentMessageRequest>,
    ) -> Result<Response<pb::SendAgentMessageResponse>, Status> {
        let who = principal(&req)?;
        let conv = self.api.ready()?;
        let _permit = self.api.admit()?;
        let r = req.into_inner();
        let (m, replayed, lease_until) = conv
            .agent_message(caller(&who), &r.ticket_id, &r.client_message_id, &r.text)
            .await
            .map_err(|e| self.api.service_error(e))?;
        Ok(Response::new(pb::SendAgentMessageResponse {
            message: Some(convert::message(&m)),
            replayed,
            lease_expire_time: Some(convert::timestamp(lease_until)),
        }))
    }

    #[tracing::instrument(name = "SendTyping", skip_all, fields(ticket_id = %req.get_ref().ticket_id))]
    async fn send_typing(
        &self,
        req: Request<pb::SendTypingRequest>,
    ) -> Result<Response<pb::SendTypingResponse>, Status> {
        let who = principal(&req)?;
        let conv = self.api.ready()?;
        let _permit = self.api.admit()?;
        let r = req.into_inner();
        conv.agent_typing(caller(&who), &r.ticket_id, r.active)
            .await
            .map_err(|e| self.api.service_error(e))?;
        Ok(Response::new(pb::SendTypingResponse {}))
    }

    #[tracing::instrument(name = "Resolve", skip_all, fields(ticket_id = %req.get_ref().ticket_id))]
    async fn resolve(
        &self,
        req: Request<pb::ResolveRequest>,
    ) -> Result<Response<pb::ResolveResponse>, Status> {
        let who = principal(&req)?;
        let conv = self.api.ready()?;
        let _permit = self.api.admit()?;
        let r = req.into_inner();
        let (t, transcript) = conv
            .resolve(caller(&who), &r.ticket_id, &r.outcome, &r.note)
            .await
            .map_err(|e| self.api.service_error(e))?;
        tracing::info!(agent_id = %who.subject, ticket_id = %t.id, outcome = %r.outcome, "resolved");
        Ok(Response::new(pb::ResolveResponse {
            ticket: Some(convert::ticket(&t, &transcript)),
        }))
    }

    #[tracing::instrument(name = "HandBack", skip_all, fields(ticket_id = %req.get_ref().ticket_id))]
    async fn hand_back(
        &self,
        req: Request<pb::HandBackRequest>,
    ) -> Result<Response<pb::HandBackResponse>, Status> {
        let who = principal(&req)?;
        let conv = self.api.ready()?;
        let _permit = self.api.admit()?;
        let r = req.into_inner();
        let (t, said) = conv
            .hand_back(caller(&who), &r.ticket_id, &r.flow)
            .await
            .map_err(|e| self.api.service_error(e))?;
        tracing::info!(agent_id = %who.subject, ticket_id = %t.id, flow = %r.flow, "handed back");
        Ok(Response::new(pb::HandBackResponse {
            ticket: Some(convert::ticket(&t, &[])),
            messages: said.iter().map(convert::bot_message).collect(),
        }))
    }
}
