//! Rank 0 serves, the other ranks follow (docs/distributed.md, "Launching"). Under
//! `gomlx launch` every rank loads the model; rank 0's engine takes requests and, at
//! each turn of its loop, sends the followers what changes the scheduler's course (the
//! commands it took with their prompts and sampler settings, seeds fixed; the requests
//! cancelled; whether the model is closing) through the MLX distributed group, in one
//! all_sum when the turn is small (most decode steps). Each
//! follower feeds the same commands to its own scheduler, so every rank runs the same
//! steps and the collective calls of a sharded forward line up. Followers expose no API.

use super::classify::{self, ClassifyOptions};
use super::worker::{Command, GenerateRequest};
use super::{Event, GenerateOptions};
use crate::mlx::distributed::Group;
use crate::mlx::Array;
use crate::models::LoadOptions;
use crate::sample::{Grammars, SamplerConfig};
use crate::text::Tokenizer;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;

/// This process's part when the model is to be split over a group (the `distributed`
/// load option, else `GOMLX_DISTRIBUTED`) of several ranks: `Some(0)` leads, `Some(r)`
/// follows; None when alone. The rank is read from the environment the launcher set
/// (`MLX_RANK`, or Open MPI's), without starting MLX.
pub fn distributed_rank(o: &LoadOptions) -> Option<usize> {
    crate::models::tuning::distributed(o)?;
    ["MLX_RANK", "OMPI_COMM_WORLD_RANK"].iter().find_map(|k| std::env::var(k).ok()?.trim().parse().ok())
}

static REPORT: std::sync::Mutex<Option<Result<(u64, u64)>>> = std::sync::Mutex::new(None);

/// A follower's end: the turns it followed and the generations it ran, or why it stopped.
pub(crate) fn report(r: Result<(u64, u64)>) {
    *REPORT.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
}

pub(crate) fn take_report() -> Result<(u64, u64)> {
    REPORT.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_else(|| Err(Error::Engine("the follower's engine thread ended without a report".into())))
}

/// One turn of rank 0's loop as the followers need it.
#[derive(Serialize, Deserialize, Debug)]
enum Step {
    Turn {
        commands: Vec<Wire>,
        cancelled: Vec<u64>,
        closed: bool,
    },
    /// Rank 0's engine stopped: the followers stop too.
    Stop,
}

#[derive(Serialize, Deserialize, Debug)]
enum Wire {
    Generate {
        id: u64,
        prompt: Vec<u32>,
        max_tokens: usize,
        sampler: SamplerConfig,
        stop: Vec<String>,
        ignore_eos: bool,
        prefill_chunk: usize,
        session: Option<u64>,
    },
    Classify {
        prompts: Vec<Vec<u32>>,
        labels: Option<Vec<(String, u32)>>,
        opts: ClassifyOptions,
    },
    DropSession(u64),
    ClearPrefixCache,
}

/// What the engine loop does with the group.
pub(crate) enum Lockstep {
    Leader(Leader),
    Follower(Follower),
}

pub(crate) struct Leader {
    group: Group,
    next_id: u64,
    /// Per running generation: the caller's cancel flag and the one its row reads, which
    /// changes only at a turn, when the followers hear of it.
    flags: HashMap<u64, (Arc<AtomicBool>, Arc<AtomicBool>)>,
    pub steps: u64,
}

pub(crate) struct Follower {
    group: Group,
    flags: HashMap<u64, Arc<AtomicBool>>,
    /// Each generation's event stream, read and dropped (sends must succeed, as on rank 0).
    streams: Vec<Receiver<Event>>,
    grammars: Option<Arc<Grammars>>,
    pub steps: u64,
    pub requests: u64,
}

/// The group of this process when it is a rank of several; None when alone.
pub(crate) fn join(o: &LoadOptions) -> Result<Option<Lockstep>> {
    let Some(rank) = distributed_rank(o) else { return Ok(None) };
    let backend = crate::models::tuning::distributed(o).unwrap_or_default();
    let group = Group::init(&backend, true)?;
    if group.size() < 2 {
        return Ok(None);
    }
    if group.rank() != rank {
        return Err(Error::Engine(format!("MLX_RANK is {rank} but the group says rank {}", group.rank())));
    }
    Ok(Some(if rank == 0 {
        Lockstep::Leader(Leader { group, next_id: 1, flags: HashMap::new(), steps: 0 })
    } else {
        Lockstep::Follower(Follower { group, flags: HashMap::new(), streams: Vec::new(), grammars: None, steps: 0, requests: 0 })
    }))
}

/// Words of a turn's first collective: its length and the first bytes, so that a
/// turn with little to say (most decode steps) costs one all_sum.
const HEAD_WORDS: usize = 64;

/// Rank 0's bytes to every rank: all_sum where the followers add zeros (the length and
/// the bytes packed four to an int32; a second all_sum for what the head cannot hold).
fn broadcast(group: &Group, bytes: Option<&[u8]>) -> Result<Vec<u8>> {
    let pack = |b: &[u8], words: usize| {
        let mut data = vec![0i32; words];
        for (w, chunk) in data.iter_mut().zip(b.chunks(4)) {
            let mut le = [0u8; 4];
            le[..chunk.len()].copy_from_slice(chunk);
            *w = i32::from_le_bytes(le);
        }
        data
    };
    let room = (HEAD_WORDS - 1) * 4;
    let mut head = vec![0i32; HEAD_WORDS];
    if let Some(b) = bytes {
        head[0] = b.len() as i32;
        head[1..].copy_from_slice(&pack(&b[..b.len().min(room)], HEAD_WORDS - 1));
    }
    let head = group.all_sum(&Array::from_slice(&head, &[HEAD_WORDS as i32])?)?.to_vec::<i32>()?;
    let n = head[0].max(0) as usize;
    let mut out: Vec<u8> = head[1..].iter().flat_map(|w| w.to_le_bytes()).collect();
    if n > room {
        let words = (n - room).div_ceil(4);
        let rest = pack(bytes.map_or(&[][..], |b| &b[room..]), words);
        let rest = group.all_sum(&Array::from_slice(&rest, &[words as i32])?)?.to_vec::<i32>()?;
        out.extend(rest.iter().flat_map(|w| w.to_le_bytes()));
    }
    out.truncate(n);
    Ok(out)
}

impl Leader {
    /// Tells the followers this turn's commands (and prepares them so every rank runs them
    /// alike); returns the commands to run here and whether the model is closing.
    pub fn turn(&mut self, cmds: Vec<Command>, closed: bool) -> Result<(Vec<Command>, bool)> {
        self.steps += 1;
        let mut wire = Vec::new();
        let mut keep = Vec::with_capacity(cmds.len());
        for c in cmds {
            match c {
                Command::Generate(mut req) => {
                    let id = self.next_id;
                    self.next_id += 1;
                    // A seed from the clock is drawn once, here, for every rank.
                    if req.opts.sampler.seed.is_none() {
                        req.opts.sampler.seed =
                            Some(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0));
                    }
                    let row = Arc::new(AtomicBool::new(req.cancel.load(Ordering::SeqCst)));
                    let user = std::mem::replace(&mut req.cancel, row.clone());
                    self.flags.insert(id, (user, row));
                    req.lockstep = true;
                    let o = &req.opts;
                    wire.push(Wire::Generate {
                        id,
                        prompt: req.prompt.clone(),
                        max_tokens: o.max_tokens,
                        sampler: o.sampler.clone(),
                        stop: o.stop.clone(),
                        ignore_eos: o.ignore_eos,
                        prefill_chunk: o.prefill_chunk,
                        session: req.session,
                    });
                    keep.push(Command::Generate(req));
                }
                Command::Classify(req) => {
                    wire.push(Wire::Classify { prompts: req.prompts.clone(), labels: req.labels.clone(), opts: req.opts.clone() });
                    keep.push(Command::Classify(req));
                }
                Command::DropSession(id) => {
                    wire.push(Wire::DropSession(id));
                    keep.push(Command::DropSession(id));
                }
                Command::ClearPrefixCache(reply) => {
                    wire.push(Wire::ClearPrefixCache);
                    keep.push(Command::ClearPrefixCache(reply));
                }
                // Reading a session's cache changes nothing.
                c @ Command::SaveSession(..) => keep.push(c),
                Command::LoadSession(_, _, reply) => {
                    let _ = reply.send(Err(Error::InvalidArgument("loading a saved session is not supported on a distributed model (gomlx launch)".into())));
                }
            }
        }
        // Cancellations reach the rows here, on every rank at the same turn.
        let mut cancelled = Vec::new();
        self.flags.retain(|&id, (user, row)| {
            if user.load(Ordering::SeqCst) && !row.load(Ordering::SeqCst) {
                row.store(true, Ordering::SeqCst);
                cancelled.push(id);
            }
            Arc::strong_count(row) > 1
        });
        cancelled.sort_unstable();
        let step = Step::Turn { commands: wire, cancelled, closed };
        let bytes = serde_json::to_vec(&step).map_err(|e| Error::Engine(format!("distributed step: {e}")))?;
        broadcast(&self.group, Some(&bytes))?;
        Ok((keep, closed))
    }

    /// Tells the followers that rank 0's engine stopped.
    pub fn stop(&mut self) -> Result<()> {
        let bytes = serde_json::to_vec(&Step::Stop).expect("JSON of a unit variant");
        broadcast(&self.group, Some(&bytes)).map(|_| ())
    }
}

impl Follower {
    /// Waits for rank 0's next turn; returns its commands and whether the model is closing,
    /// or None when rank 0 stopped.
    pub fn turn(&mut self, tokenizer: Option<&Arc<Tokenizer>>, vocab_size: usize) -> Result<Option<(Vec<Command>, bool)>> {
        self.streams.retain(|rx| loop {
            match rx.try_recv() {
                Ok(_) => continue,
                Err(TryRecvError::Empty) => break true,
                Err(TryRecvError::Disconnected) => break false,
            }
        });
        let bytes = broadcast(&self.group, None)?;
        let step: Step = serde_json::from_slice(&bytes).map_err(|e| Error::Engine(format!("distributed step from rank 0: {e}")))?;
        self.steps += 1;
        let (wire, cancelled, closed) = match step {
            Step::Stop => return Ok(None),
            Step::Turn { commands, cancelled, closed } => (commands, cancelled, closed),
        };
        let mut cmds = Vec::with_capacity(wire.len());
        for w in wire {
            match w {
                Wire::Generate { id, prompt, max_tokens, sampler, stop, ignore_eos, prefill_chunk, session } => {
                    self.requests += 1;
                    let constraint = match &sampler.constraint {
                        Some(c) => Some(self.grammars(tokenizer, vocab_size)?.compile(c)?),
                        None => None,
                    };
                    let (tx, rx) = mpsc::channel();
                    self.streams.push(rx);
                    let cancel = Arc::new(AtomicBool::new(false));
                    self.flags.insert(id, cancel.clone());
                    let opts = GenerateOptions { max_tokens, sampler, stop, ignore_eos, prefill_chunk };
                    cmds.push(Command::Generate(Box::new(GenerateRequest { prompt, opts, session, events: tx, cancel, constraint, lockstep: true })));
                }
                Wire::Classify { prompts, labels, opts } => {
                    let (reply, _) = mpsc::channel();
                    cmds.push(Command::Classify(Box::new(classify::Request { prompts, labels, opts, reply })));
                }
                Wire::DropSession(id) => cmds.push(Command::DropSession(id)),
                Wire::ClearPrefixCache => cmds.push(Command::ClearPrefixCache(mpsc::channel().0)),
            }
        }
        for id in cancelled {
            if let Some(f) = self.flags.get(&id) {
                f.store(true, Ordering::SeqCst);
            }
        }
        self.flags.retain(|_, f| Arc::strong_count(f) > 1);
        Ok(Some((cmds, closed)))
    }

    fn grammars(&mut self, tokenizer: Option<&Arc<Tokenizer>>, vocab_size: usize) -> Result<Arc<Grammars>> {
        if self.grammars.is_none() {
            let tok = tokenizer.ok_or_else(|| Error::Tokenizer("a constrained request on a model without a tokenizer".into()))?;
            self.grammars = Some(Arc::new(Grammars::new(tok, vocab_size)?));
        }
        Ok(self.grammars.clone().expect("set above"))
    }
}
