//! The inference engine: the encoder and intent model live on one dedicated
//! thread, fed by a bounded queue. Each time the thread is free it takes
//! everything waiting (up to a batch and token budget), runs it as
//! length-sorted batches, and answers every request on its own channel.
//! Callers never run model code on their own (async) threads; a full queue
//! is refused at once ([`ModelError::Overloaded`]) rather than waited on.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError, bounded};
use tokio::sync::oneshot;

use crate::classifier::{IntentModel, Prediction};
use crate::encoder::{Encoder, Tokens};
use crate::error::{ModelError, Result};

#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Requests that may wait; more are refused with `Overloaded`.
    pub queue_capacity: usize,
    /// Most utterances the thread takes for one round.
    pub max_batch: usize,
    /// Most padded tokens in one encoder call.
    pub token_budget: usize,
    /// How long the thread may wait for more requests after the first one
    /// before running a round (zero: run with whatever is queued).
    pub max_wait: Duration,
    /// Intents ranked per prediction.
    pub top_k: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            max_batch: 64,
            token_budget: 2048,
            max_wait: Duration::ZERO,
            top_k: 5,
        }
    }
}

/// The answer to one request plus how long it waited and ran.
#[derive(Debug, Clone)]
pub struct Classified {
    pub prediction: Prediction,
    /// Time from submit until the round that included it started.
    pub queued: Duration,
    /// Size of that round.
    pub batch_size: usize,
}

struct Request {
    text: String,
    submitted: Instant,
    // The caller holds the receiver; if it is dropped (client gone) the
    // request is skipped instead of computed.
    reply: oneshot::Sender<Result<Classified>>,
}

/// Longest text (in bytes) the engine accepts.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// Handle to the engine thread. Dropping it closes the queue; the thread
/// finishes what was already accepted and exits.
#[derive(Debug)]
pub struct Engine {
    tx: Option<Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    capacity: usize,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("chars", &self.text.len())
            .finish()
    }
}

impl Engine {
    /// Starts the engine thread with a loaded encoder and model.
    pub fn start(encoder: Encoder, model: IntentModel, config: EngineConfig) -> Result<Self> {
        if let Some(reason) = model.encoder_mismatch(&encoder) {
            return Err(ModelError::Inference(format!(
                "the model does not fit the encoder: {reason}"
            )));
        }
        let (tx, rx) = bounded::<Request>(config.queue_capacity.max(1));
        let thread = std::thread::Builder::new()
            .name("bankbot-nlu".into())
            .spawn(move || worker(&encoder, &model, &rx, &config))
            .map_err(|e| ModelError::Io {
                path: "<engine thread>".into(),
                source: e,
            })?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            capacity: config.queue_capacity,
        })
    }

    /// Queues a text; the receiver yields the prediction.
    pub fn submit(&self, text: &str) -> Result<oneshot::Receiver<Result<Classified>>> {
        if text.trim().is_empty() {
            return Err(ModelError::EmptyText);
        }
        // Only the first 128 tokens count; a huge text would only hold up the
        // engine thread while it is tokenised.
        if text.len() > MAX_TEXT_BYTES {
            return Err(ModelError::TextTooLong {
                bytes: text.len(),
                max: MAX_TEXT_BYTES,
            });
        }
        let (reply, rx) = oneshot::channel();
        let req = Request {
            text: text.to_owned(),
            submitted: Instant::now(),
            reply,
        };
        let tx = self.tx.as_ref().ok_or(ModelError::EngineStopped)?;
        match tx.try_send(req) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(ModelError::Overloaded {
                capacity: self.capacity,
            }),
            Err(TrySendError::Disconnected(_)) => Err(ModelError::EngineStopped),
        }
    }

    /// Requests waiting for the engine thread (for metrics).
    pub fn queue_len(&self) -> usize {
        self.tx.as_ref().map_or(0, Sender::len)
    }

    /// Classifies one text, blocking the calling thread (not for async code).
    pub fn classify_blocking(&self, text: &str) -> Result<Classified> {
        self.submit(text)?
            .blocking_recv()
            .map_err(|_| ModelError::EngineStopped)?
    }

    /// Classifies one text from async code.
    pub async fn classify(&self, text: &str) -> Result<Classified> {
        self.submit(text)?
            .await
            .map_err(|_| ModelError::EngineStopped)?
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn worker(encoder: &Encoder, model: &IntentModel, rx: &Receiver<Request>, cfg: &EngineConfig) {
    let mut round: Vec<Request> = Vec::with_capacity(cfg.max_batch);
    while let Ok(first) = rx.recv() {
        round.push(first);
        let deadline = Instant::now() + cfg.max_wait;
        while round.len() < cfg.max_batch {
            match rx.try_recv() {
                Ok(r) => round.push(r),
                Err(TryRecvError::Empty) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    match rx.recv_timeout(deadline - now) {
                        Ok(r) => round.push(r),
                        Err(_) => break,
                    }
                }
                Err(TryRecvError::Disconnected) => break,
            }
        }
        run_round(encoder, model, std::mem::take(&mut round), cfg);
    }
}

fn run_round(encoder: &Encoder, model: &IntentModel, round: Vec<Request>, cfg: &EngineConfig) {
    let started = Instant::now();
    let size = round.len();
    let mut live: Vec<(Request, Tokens)> = Vec::with_capacity(size);
    for req in round {
        if req.reply.is_closed() {
            continue; // the caller went away
        }
        match encoder.tokenize(&req.text) {
            Ok(tokens) => live.push((req, tokens)),
            Err(e) => {
                let _ = req.reply.send(Err(e));
            }
        }
    }
    // Shortest first, so each batch pads little; batches are cut from the front.
    live.sort_by_key(|(_, t)| std::cmp::Reverse(t.len()));
    while !live.is_empty() {
        let n = live.len();
        let mut take = 1;
        while take < n && live[n - 1 - take].1.len() * (take + 1) <= cfg.token_budget {
            take += 1;
        }
        let chunk: Vec<(Request, Tokens)> = live.drain(n - take..).rev().collect();
        let batch: Vec<&Tokens> = chunk.iter().map(|(_, t)| t).collect();
        // A panic in model code must not end the engine thread (every later
        // request would fail): it fails this batch only.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            encoder
                .embed_tokens(&batch, &model.features)
                .map(|f| model.predict(&f, cfg.top_k))
        }))
        .unwrap_or_else(|_| {
            Err(ModelError::Inference(
                "internal error in the model code".into(),
            ))
        });
        match result {
            Ok(preds) => {
                for ((req, _), prediction) in chunk.into_iter().zip(preds) {
                    let queued = started.saturating_duration_since(req.submitted);
                    let _ = req.reply.send(Ok(Classified {
                        prediction,
                        queued,
                        batch_size: size,
                    }));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for (req, _) in chunk {
                    let _ = req.reply.send(Err(ModelError::Inference(msg.clone())));
                }
            }
        }
    }
}
