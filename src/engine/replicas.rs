//! Replicas (data parallel, for throughput): one engine thread per device, each with a
//! whole copy of the model; requests go to the replica with the least outstanding work
//! (docs/distributed.md, "Replicas").

use super::Shared;
use crate::mlx::DeviceKind;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// One engine thread of an `Engine` and what it has been given.
pub(crate) struct Replica {
    pub shared: Arc<Shared>,
    pub device_index: usize,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    /// Generations and classify jobs sent and not yet ended.
    outstanding: AtomicUsize,
    /// Everything ever sent.
    started: AtomicU64,
}

/// A unit of work counted as outstanding on its replica until dropped.
pub(crate) struct Work(Arc<Counters>);

impl Drop for Work {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What one replica is doing and has done (`Engine::replica_stats`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaStats {
    pub index: usize,
    pub device: DeviceKind,
    /// The MLX device index it runs on (0 on the CPU).
    pub device_index: usize,
    /// Generations and classify jobs in flight now.
    pub outstanding: usize,
    /// Generations and classify jobs it was given since the load.
    pub requests: u64,
}

/// An engine's replicas; `pick` is serialised so concurrent callers spread.
pub(crate) struct Replicas {
    pub list: Vec<Replica>,
    pick: Mutex<()>,
}

impl Replicas {
    pub fn new(list: Vec<(Arc<Shared>, usize)>) -> Replicas {
        let list = list.into_iter().map(|(shared, device_index)| Replica { shared, device_index, counters: Arc::default() }).collect();
        Replicas { list, pick: Mutex::new(()) }
    }

    /// The replica with the least outstanding work (ties: the one given least so far), or
    /// `pinned` (a session's), with its work counted.
    pub fn pick(&self, pinned: Option<usize>) -> (usize, Work) {
        let _one = self.pick.lock().unwrap_or_else(|e| e.into_inner());
        let i = match pinned {
            Some(i) if i < self.list.len() => i,
            _ => self.least_loaded(),
        };
        let c = &self.list[i].counters;
        c.started.fetch_add(1, Ordering::SeqCst);
        c.outstanding.fetch_add(1, Ordering::SeqCst);
        (i, Work(c.clone()))
    }

    pub fn least_loaded(&self) -> usize {
        (0..self.list.len())
            .min_by_key(|&i| {
                let c = &self.list[i].counters;
                (c.outstanding.load(Ordering::SeqCst), c.started.load(Ordering::SeqCst))
            })
            .unwrap_or(0)
    }

    pub fn stats(&self, device: DeviceKind) -> Vec<ReplicaStats> {
        self.list
            .iter()
            .enumerate()
            .map(|(index, r)| ReplicaStats {
                index,
                device,
                device_index: r.device_index,
                outstanding: r.counters.outstanding.load(Ordering::SeqCst),
                requests: r.counters.started.load(Ordering::SeqCst),
            })
            .collect()
    }
}
