//! MLX distributed: a `Group` of processes (one per device) and the
//! collectives tensor parallelism needs. The backends are MLX's: `ring` (TCP;
//! CPUs, Macs over Ethernet/Thunderbolt), `nccl` (CUDA GPUs), `mpi`, `jaccl`
//! (RDMA between Macs). A process learns its rank and peers from the
//! environment MLX reads: `MLX_RANK` and `MLX_HOSTFILE` (ring), `MLX_RANK`,
//! `MLX_WORLD_SIZE`, `NCCL_HOST_IP`, `NCCL_PORT` (nccl). docs/distributed.md.
//!
//! Collectives are lazy ops like the others: they run on the thread's current
//! stream when their result is evaluated, and every rank must evaluate the same
//! collectives in the same order. Only nccl has GPU kernels: the other backends'
//! collectives run on the CPU stream whatever the thread's is (on CUDA, a ring
//! all_sum queued on the GPU stream aborts MLX's graph capture).

use super::array::{Array, Dtype};
use super::{status, sys};
use crate::{Error, Result};
use std::ffi::CString;

/// The backends `init` accepts ("any" tries MLX's in its order).
pub const BACKENDS: &[&str] = &["ring", "nccl", "mpi", "jaccl", "any"];

fn backend_name(backend: &str) -> Result<CString> {
    if !BACKENDS.contains(&backend) {
        return Err(Error::InvalidArgument(format!("distributed backend '{backend}': expected one of {}", BACKENDS.join(", "))));
    }
    Ok(CString::new(backend).expect("backend names hold no NUL"))
}

/// Whether this MLX build has `backend` ("any": any backend at all).
pub fn is_available(backend: &str) -> bool {
    status::init();
    match backend_name(backend) {
        Ok(name) => unsafe { sys::mlx_distributed_is_available(name.as_ptr()) },
        Err(_) => false,
    }
}

/// A group of communicating processes; this process is `rank()` of `size()`.
/// Freed on drop (MLX keeps the backend itself alive for the process: a second
/// `init` of the same backend returns the same group).
pub struct Group {
    raw: sys::mlx_distributed_group,
    /// The backend communicates from the host (every backend but nccl).
    host: bool,
}

// An mlx_distributed_group is a heap `Group` holding a shared_ptr to MLX's
// backend. rank/size read immutable fields and the collectives only record
// graph nodes (copying the shared_ptr); communication happens when the arrays
// are evaluated, on a stream's worker. So moving and sharing the handle is sound;
// the SPMD rule (every rank runs the same collectives in order) is the caller's.
unsafe impl Send for Group {}
unsafe impl Sync for Group {}

impl Group {
    /// Joins the group the environment describes over `backend` (`ring`,
    /// `nccl`, `mpi`, `jaccl` or `any`). With `strict` a backend that cannot
    /// start is an error; without, MLX gives a one-process group whose
    /// collectives are identities.
    pub fn init(backend: &str, strict: bool) -> Result<Group> {
        let name = backend_name(backend)?;
        status::init();
        if strict && !unsafe { sys::mlx_distributed_is_available(name.as_ptr()) } {
            return Err(Error::InvalidArgument(format!("distributed backend '{backend}' is not available in this MLX build")));
        }
        let mut raw = unsafe { sys::mlx_distributed_group_new() };
        let rc = unsafe { sys::mlx_distributed_init(&mut raw, strict, name.as_ptr()) };
        if let Err(e) = status::check(rc) {
            unsafe { sys::mlx_distributed_group_free(raw) };
            return Err(Error::InvalidArgument(format!("distributed backend '{backend}' did not start: {e} ({})", env_hint(backend))));
        }
        if raw.ctx.is_null() {
            return Err(Error::InvalidArgument(format!("distributed backend '{backend}' did not start ({})", env_hint(backend))));
        }
        // "any" is nccl where nccl's environment is set (gomlx launch, mlx.launch).
        let host = match backend {
            "nccl" => false,
            "any" => std::env::var_os("NCCL_HOST_IP").is_none(),
            _ => true,
        };
        Ok(Group { raw, host })
    }

    /// This process's index in the group, 0..size.
    pub fn rank(&self) -> usize {
        unsafe { sys::mlx_distributed_group_rank(self.raw) }.max(0) as usize
    }

    /// The number of processes in the group.
    pub fn size(&self) -> usize {
        unsafe { sys::mlx_distributed_group_size(self.raw) }.max(1) as usize
    }

    /// The sub-group of the processes that pass the same `color`, ordered by
    /// `key` (negative: by rank in this group). Every rank must call it.
    pub fn split(&self, color: i32, key: i32) -> Result<Group> {
        status::init();
        let mut raw = unsafe { sys::mlx_distributed_group_new() };
        let rc = unsafe { sys::mlx_distributed_group_split(&mut raw, self.raw, color, key) };
        if let Err(e) = status::check(rc) {
            unsafe { sys::mlx_distributed_group_free(raw) };
            return Err(e);
        }
        Ok(Group { raw, host: self.host })
    }

    /// The element-wise sum of `x` over all ranks (every rank gets it).
    pub fn all_sum(&self, x: &Array) -> Result<Array> {
        self.on_its_stream(|| Array::op(|r, s| unsafe { sys::mlx_distributed_all_sum(r, x.raw(), self.raw, s) }))
    }

    /// The element-wise maximum of `x` over all ranks.
    pub fn all_max(&self, x: &Array) -> Result<Array> {
        self.on_its_stream(|| Array::op(|r, s| unsafe { sys::mlx_distributed_all_max(r, x.raw(), self.raw, s) }))
    }

    /// Every rank's `x` concatenated along axis 0, in rank order.
    pub fn all_gather(&self, x: &Array) -> Result<Array> {
        self.on_its_stream(|| Array::op(|r, s| unsafe { sys::mlx_distributed_all_gather(r, x.raw(), self.raw, s) }))
    }

    /// The sum over ranks of `x`, split along axis 0: rank i keeps the i-th part.
    pub fn sum_scatter(&self, x: &Array) -> Result<Array> {
        self.on_its_stream(|| Array::op(|r, s| unsafe { sys::mlx_distributed_sum_scatter(r, x.raw(), self.raw, s) }))
    }

    /// Sends `x` to rank `dst`; the result (x itself) must be evaluated for the send to happen.
    pub fn send(&self, x: &Array, dst: usize) -> Result<Array> {
        self.check_peer(dst)?;
        self.on_its_stream(|| Array::op(|r, s| unsafe { sys::mlx_distributed_send(r, x.raw(), dst as i32, self.raw, s) }))
    }

    /// Receives an array of `shape` and `dtype` from rank `src`.
    pub fn recv(&self, shape: &[i32], dtype: Dtype, src: usize) -> Result<Array> {
        self.check_peer(src)?;
        self.on_its_stream(|| Array::op(|r, s| unsafe { sys::mlx_distributed_recv(r, shape.as_ptr(), shape.len(), dtype.raw(), src as i32, self.raw, s) }))
    }

    /// Receives an array shaped and typed like `like` from rank `src`.
    pub fn recv_like(&self, like: &Array, src: usize) -> Result<Array> {
        self.check_peer(src)?;
        self.on_its_stream(|| Array::op(|r, s| unsafe { sys::mlx_distributed_recv_like(r, like.raw(), src as i32, self.raw, s) }))
    }

    /// Queues a collective where the backend can run it: a host backend's on the CPU stream.
    fn on_its_stream(&self, op: impl FnOnce() -> Result<Array>) -> Result<Array> {
        if self.host {
            super::stream::on_cpu(op)?
        } else {
            op()
        }
    }

    fn check_peer(&self, peer: usize) -> Result<()> {
        if peer >= self.size() || peer == self.rank() {
            return Err(Error::InvalidArgument(format!("rank {peer} is not a peer of rank {} in a group of {}", self.rank(), self.size())));
        }
        Ok(())
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        unsafe { sys::mlx_distributed_group_free(self.raw) };
    }
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Group(rank {} of {})", self.rank(), self.size())
    }
}

/// What the environment must say for `backend`, for error messages.
fn env_hint(backend: &str) -> &'static str {
    match backend {
        "ring" => "the ring backend reads MLX_RANK and MLX_HOSTFILE, a JSON file listing each rank's [\"ip:port\"]",
        "nccl" => "the nccl backend reads MLX_RANK, MLX_WORLD_SIZE, NCCL_HOST_IP and NCCL_PORT, one process per GPU",
        "mpi" => "the mpi backend needs an MPI library and mpirun",
        "jaccl" => "the jaccl backend reads MLX_RANK, MLX_IBV_DEVICES and MLX_JACCL_COORDINATOR",
        _ => "no backend could start; see docs/distributed.md",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_backends_are_refused() {
        let e = Group::init("tcp", true).unwrap_err().to_string();
        assert!(e.contains("'tcp'") && e.contains("ring"), "{e}");
        assert!(!is_available("tcp"));
        assert!(is_available("ring"));
    }

    #[test]
    fn a_single_process_group_sums_to_itself() {
        // No MLX_HOSTFILE in a unit test: the non-strict group is this process alone.
        let g = Group::init("any", false).unwrap();
        assert_eq!((g.rank(), g.size()), (0, 1));
        let x = Array::from_slice(&[1.5f32, -2.0, 3.25], &[3]).unwrap();
        assert_eq!(g.all_sum(&x).unwrap().to_vec::<f32>().unwrap(), vec![1.5, -2.0, 3.25]);
        assert_eq!(g.all_gather(&x).unwrap().to_vec::<f32>().unwrap(), vec![1.5, -2.0, 3.25]);
        assert!(g.send(&x, 1).is_err());
    }
}
