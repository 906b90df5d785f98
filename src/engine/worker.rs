//! The engine thread: owns the model, its stream and all request state, and
//! serves requests from a channel. Generations are rows of one continuously
//! batched decode (`scheduler`); classify calls are jobs run between its steps.

use super::generation::GenState;
use super::lockstep::Lockstep;
use super::prefix::PrefixStore;
use super::scheduler::{Ended, Scheduler};
use super::{classify, Event, GenerateOptions};
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
    /// The MLX device index (a replica's GPU; 0 on the CPU).
    pub device_index: usize,
    pub load: LoadOptions,
    pub context_length: Option<usize>,
    pub max_rows: usize,
    /// Byte budget of the prefix cache (0: off).
    pub prefix_bytes: usize,
}

pub(crate) struct GenerateRequest {
    pub prompt: Vec<u32>,
    pub opts: GenerateOptions,
    pub session: Option<u64>,
    pub events: Sender<Event>,
    pub cancel: Arc<AtomicBool>,
    /// The compiled `opts.sampler.constraint` (compiled on the caller's thread).
    pub constraint: Option<crate::sample::ConstraintState>,
    /// A rank of a distributed group (`lockstep`): a consumer gone does not end the row
    /// at once; its cancellation reaches every rank at the next turn.
    pub lockstep: bool,
}

pub(crate) enum Command {
    Generate(Box<GenerateRequest>),
    Classify(Box<classify::Request>),
    DropSession(u64),
    /// Empties the prefix cache; replies with the bytes it held.
    ClearPrefixCache(Sender<usize>),
    SaveSession(u64, PathBuf, Sender<Result<()>>),
    LoadSession(u64, PathBuf, Sender<Result<()>>),
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
    scheduler: Scheduler,
    /// Classify calls waiting; one runs between decode steps while rows decode.
    jobs: VecDeque<Box<classify::Request>>,
    prefix: PrefixStore,
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
        stream::set_thread_stream(Stream::new_on(req.device, req.device_index)?);
        // Every rank joins the group before it loads (a sharded load uses it).
        let sync = super::lockstep::join(&req.load)?;
        load(&req).map(|(m, t)| (m, t, sync))
    });
    let (model, tokenizer, mut sync) = match loaded {
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
    let scheduler = Scheduler::new(model.config().num_layers, req.max_rows, req.prefix_bytes > 0);
    let prefix = PrefixStore::new(req.prefix_bytes);
    let mut w = Worker { model, tokenizer, context_length, sessions: HashMap::new(), busy_sessions: HashMap::new(), scheduler, jobs: VecDeque::new(), prefix };
    let mut open = true;
    let vocab_size = w.model.info().vocab_size;
    loop {
        // A follower's turns come from rank 0 (until it says stop); no caller talks to it.
        let following = matches!(sync, Some(Lockstep::Follower(_)));
        if !following && !open && w.scheduler.is_idle() && w.jobs.is_empty() {
            break;
        }
        let (cmds, closing) = match &mut sync {
            Some(Lockstep::Follower(f)) => {
                let _gpu = mlx::gpu_guard();
                match guarded(|| f.turn(w.tokenizer.as_ref(), vocab_size)) {
                    Ok(Some(turn)) => turn,
                    Ok(None) => {
                        super::lockstep::report(Ok((f.steps, f.requests)));
                        let ended = w.scheduler.end_all(super::CLOSED_WHILE_RUNNING);
                        w.retire(ended);
                        break;
                    }
                    Err(e) => {
                        super::lockstep::report(Err(e));
                        break;
                    }
                }
            }
            _ => {
                // Block for work only when nothing is running.
                let first = if w.scheduler.is_idle() && w.jobs.is_empty() {
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
                (cmds, closed.load(Ordering::SeqCst))
            }
        };
        let _gpu = mlx::gpu_guard();
        let (cmds, closing) = match &mut sync {
            Some(Lockstep::Leader(l)) => match guarded(|| l.turn(cmds, closing)) {
                Ok(turn) => turn,
                Err(e) => {
                    // The group is broken (a rank died): nothing can run any more.
                    let ended = w.scheduler.end_all(&format!("the distributed group failed: {e}"));
                    w.retire(ended);
                    sync = None;
                    break;
                }
            },
            _ => (cmds, closing),
        };
        for c in cmds {
            w.handle(c);
        }
        if closing {
            let ended = w.scheduler.end_all(super::CLOSED_WHILE_RUNNING);
            w.retire(ended);
        }
        // A classify job between decode steps: one while rows decode (bounded
        // stall), all of them when nothing else runs.
        let jobs = if w.scheduler.is_idle() { w.jobs.len() } else { w.jobs.len().min(1) };
        for _ in 0..jobs {
            let job = w.jobs.pop_front().expect("a queued job");
            let reply = job.reply.clone();
            let r = guarded(|| classify::run(&mut w, *job));
            let _ = reply.send(r);
        }
        let model = &w.model;
        let ended = match guarded(|| Ok(w.scheduler.tick(model))) {
            Ok(e) => e,
            Err(e) => w.scheduler.end_all(&e.to_string()),
        };
        w.retire(ended);
    }
    let _gpu = mlx::gpu_guard();
    if let Some(Lockstep::Leader(l)) = &mut sync {
        let _ = l.stop();
    }
    // Dropping `w` frees the weights, caches and sessions on this thread.
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
                        self.sessions.remove(&id)
                    }
                    None => match guarded(|| self.prefix.lookup(&req.prompt)) {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = req.events.send(Event::Error(e));
                            return;
                        }
                    },
                };
                let sid = req.session;
                let events = req.events.clone();
                let (model, tok, ctx) = (&self.model, self.tokenizer.as_ref(), self.context_length);
                match guarded(|| GenState::new(req, model, tok, session, ctx)) {
                    Ok((g, caches, pos)) => self.scheduler.admit(g, caches, pos),
                    Err(e) => {
                        if let Some(id) = sid {
                            self.busy_sessions.remove(&id);
                        }
                        let _ = events.send(Event::Error(e));
                    }
                }
            }
            Command::Classify(req) => self.jobs.push_back(req),
            Command::SaveSession(id, path, reply) => {
                let r = match self.sessions.get(&id) {
                    _ if self.busy_sessions.contains_key(&id) => Err(Error::InvalidArgument("a generation is running in this chat session".into())),
                    Some(s) => guarded(|| crate::cache::save(&path, &s.caches, &s.tokens)),
                    None => Err(Error::InvalidArgument("the chat session has no cache yet (nothing was generated in it)".into())),
                };
                let _ = reply.send(r);
            }
            Command::LoadSession(id, path, reply) => {
                let r = guarded(|| self.load_session(&path)).map(|s| {
                    self.sessions.insert(id, s);
                });
                let _ = reply.send(r);
            }
            Command::ClearPrefixCache(reply) => {
                let _ = reply.send(self.prefix.bytes());
                self.prefix.clear();
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

    /// A session from a cache file, checked against this model.
    fn load_session(&self, path: &std::path::Path) -> Result<Session> {
        let (caches, tokens) = crate::cache::load(path)?;
        let c = self.model.config();
        let bad = |what: String| Error::InvalidArgument(format!("{}: {what}", path.display()));
        if caches.len() != c.num_layers {
            return Err(bad(format!("a cache of {} layers for a model of {}", caches.len(), c.num_layers)));
        }
        let mut out = Vec::with_capacity(caches.len());
        for (i, cache) in caches.iter().enumerate() {
            if cache.offset() != tokens.len() {
                return Err(bad(format!("layer {i} holds {} positions for {} tokens", cache.offset(), tokens.len())));
            }
            // Sessions keep every position (growing caches): a rotating cache that dropped some cannot be one.
            let g = cache.prefix(cache.offset()).map_err(|e| bad(format!("layer {i}: {e}")))?;
            if let Some((k, _)) = g.state()?.filter(|_| !g.is_recurrent()) {
                let (s, (heads, dim)) = (k.shape(), c.layer_kv(i));
                if s.len() != 4 || s[0] != 1 || s[1] as usize != heads || s[3] as usize != dim {
                    return Err(bad(format!("layer {i} keys of shape {s:?}; the model needs [1, {heads}, T, {dim}]")));
                }
            }
            out.push(g);
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(bad(format!("token {t} is outside the vocabulary (size {})", c.vocab_size)));
        }
        Ok(Session { caches: out, tokens })
    }

    /// Returns the caches of ended generations to their sessions, or to the prefix cache.
    fn retire(&mut self, ended: Vec<Ended>) {
        for e in ended {
            match (e.session, e.state) {
                (Some(id), state) => {
                    if self.busy_sessions.remove(&id) == Some(true) {
                        if let Some(s) = state {
                            self.sessions.insert(id, s);
                        }
                    }
                }
                (None, Some(s)) => self.prefix.insert(s),
                (None, None) => {}
            }
        }
    }
}
