//! The engine thread: owns the model, its stream and all request state, and
//! serves requests from a channel. Active generations advance one step each
//! in turn (round-robin), so concurrent streams interleave fairly.

use super::generation::{GenState, Step};
use super::{batch, classify, Event, GenerateOptions};
use crate::cache::KvCache;
use crate::mlx::{self, stream, DeviceKind, Stream};
use crate::models::{LoadOptions, Model, ModelInfo};
use crate::text::Tokenizer;
use crate::{Error, Result};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::Arc;

pub(crate) struct LoadRequest {
    pub path: PathBuf,
    pub device: DeviceKind,
    pub load: LoadOptions,
    pub context_length: Option<usize>,
}

pub(crate) struct GenerateRequest {
    pub prompt: Vec<u32>,
    pub opts: GenerateOptions,
    pub session: Option<u64>,
    pub events: Sender<Event>,
    pub cancel: Arc<AtomicBool>,
}

pub(crate) enum Command {
    Generate(Box<GenerateRequest>),
    Classify(Box<classify::Request>),
    Batch(Box<batch::Request>),
    DropSession(u64),
}

/// A chat session's cache between turns.
pub(crate) struct Session {
    pub caches: Vec<KvCache>,
    pub tokens: Vec<u32>,
}

pub(crate) struct Worker {
    pub model: Model,
    pub tokenizer: Option<Arc<Tokenizer>>,
    pub context_length: usize,
    sessions: HashMap<u64, Session>,
    /// Sessions with a generation in flight (their cache is lent to it);
    /// false once the session was dropped meanwhile.
    busy_sessions: HashMap<u64, bool>,
    active: VecDeque<GenState>,
}

/// Runs `f`, turning a panic into an error so one request cannot kill the
/// thread; the panic prints nothing (`crate::panics`).
pub(crate) fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    crate::panics::catch(f).unwrap_or_else(|what| Err(Error::Engine(format!("internal error (panic): {what}"))))
}

fn load(req: &LoadRequest) -> Result<(Model, Option<Arc<Tokenizer>>)> {
    let loaded = crate::models::load(&req.path, &req.load)?;
    Ok((loaded.model, loaded.tokenizer.map(Arc::new)))
}

/// What a loaded engine tells its caller: the model, its tokenizer and the context length.
pub(crate) type Ready = (ModelInfo, Option<Arc<Tokenizer>>, usize);

pub(crate) fn run(req: LoadRequest, rx: Receiver<Command>, ready: Sender<Result<Ready>>, closed: Arc<AtomicBool>) {
    // All MLX work of this thread happens while it holds the GPU guard (a no-op
    // unless MLX is a CUDA build), taken per unit of work, never while idle.
    let loaded = guarded(|| {
        let _gpu = mlx::gpu_guard();
        stream::set_thread_stream(Stream::new(req.device)?);
        load(&req)
    });
    let (model, tokenizer) = match loaded {
        Ok(v) => v,
        Err(e) => {
            let _gpu = mlx::gpu_guard();
            stream::end_thread();
            let _ = ready.send(Err(e));
            return;
        }
    };
    let context_length = req.context_length.unwrap_or(model.info().context_length);
    if context_length < 2 {
        let _ = ready.send(Err(Error::Model(format!("{}: the model's context length {context_length} is too short", req.path.display()))));
        let _gpu = mlx::gpu_guard();
        drop(model);
        stream::end_thread();
        return;
    }
    let _ = ready.send(Ok((model.info().clone(), tokenizer.clone(), context_length)));
    let mut w = Worker { model, tokenizer, context_length, sessions: HashMap::new(), busy_sessions: HashMap::new(), active: VecDeque::new() };
    let mut open = true;
    while open || !w.active.is_empty() {
        // Block for work only when nothing is running.
        let first = if w.active.is_empty() {
            match rx.recv() {
                Ok(c) => Some(c),
                Err(_) => break,
            }
        } else {
            None
        };
        let mut cmds: Vec<Command> = first.into_iter().collect();
        loop {
            match rx.try_recv() {
                Ok(c) => cmds.push(c),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let _gpu = mlx::gpu_guard();
        for c in cmds {
            w.handle(c);
        }
        if closed.load(Ordering::SeqCst) {
            w.end_all(super::CLOSED_WHILE_RUNNING);
        }
        w.tick();
    }
    // Dropping `w` frees the weights, caches and sessions on this thread.
    let _gpu = mlx::gpu_guard();
    drop(w);
    stream::end_thread();
}

impl Worker {
    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Generate(req) => {
                let session = match req.session {
                    Some(id) if self.busy_sessions.contains_key(&id) => {
                        let _ = req.events.send(Event::Error(Error::InvalidArgument("this chat session already has a generation running".into())));
                        return;
                    }
                    Some(id) => {
                        self.busy_sessions.insert(id, true);
                        Some(self.sessions.remove(&id).unwrap_or(Session { caches: self.model.new_caches(), tokens: Vec::new() }))
                    }
                    None => None,
                };
                let sid = req.session;
                let events = req.events.clone();
                let (model, tok, ctx) = (&self.model, self.tokenizer.as_ref(), self.context_length);
                match guarded(|| GenState::new(req, model, tok, session, ctx)) {
                    Ok(g) => self.active.push_back(g),
                    Err(e) => {
                        if let Some(id) = sid {
                            self.busy_sessions.remove(&id);
                        }
                        let _ = events.send(Event::Error(e));
                    }
                }
            }
            Command::Classify(req) => {
                let reply = req.reply.clone();
                let r = guarded(|| classify::run(self, *req));
                let _ = reply.send(r);
            }
            Command::Batch(req) => {
                let reply = req.reply.clone();
                let r = guarded(|| batch::run(self, *req));
                let _ = reply.send(r);
            }
            Command::DropSession(id) => {
                // A session in use is forgotten when its generation ends.
                if let Some(keep) = self.busy_sessions.get_mut(&id) {
                    *keep = false;
                }
                self.sessions.remove(&id);
            }
        }
    }

    /// Ends every active generation with the error `why` (cancelled ones as cancelled).
    fn end_all(&mut self, why: &str) {
        for mut g in std::mem::take(&mut self.active) {
            if g.cancelled() {
                let _ = guarded(|| g.step(&self.model));
            } else {
                g.fail(Error::Engine(why.into()));
            }
            if let Some(id) = g.session_id() {
                self.busy_sessions.remove(&id);
            }
        }
    }

    /// One step of every active generation.
    fn tick(&mut self) {
        for _ in 0..self.active.len() {
            let Some(mut g) = self.active.pop_front() else { break };
            let model = &self.model;
            match guarded(|| g.step(model)) {
                Ok(Step::Continue) => self.active.push_back(g),
                Ok(Step::Done(session)) => {
                    if let Some((id, s)) = session {
                        if self.busy_sessions.remove(&id) == Some(true) {
                            self.sessions.insert(id, s);
                        }
                    }
                }
                Err(e) => {
                    g.fail(e);
                    if let Some(id) = g.session_id() {
                        self.busy_sessions.remove(&id);
                    }
                }
            }
        }
    }
}
