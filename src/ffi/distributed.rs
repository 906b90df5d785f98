//! A host process as a rank of a model split over an MLX distributed group (docs/distributed.md):
//! which rank it is, and following rank 0 on the others.

use super::options::{self, gm_load_options};
use super::{c_str, guard_status, write_out};
use crate::engine::{distributed_rank, Engine};
use std::ffi::c_char;
use std::path::Path;

/// This process's rank when `opts` (`gm_load_options.distributed`, or NULL and
/// `GOMLX_DISTRIBUTED`) splits the model over a distributed group, as the
/// launcher's environment (`MLX_RANK`) gives it: writes it to `*rank`, or -1
/// when the model is not split. Rank 0 leads: it loads with `gm_model_load`
/// and serves requests; every other rank calls `gm_follow`. Starts no MLX
/// work. Returns 0, or -1 (see `gm_last_error`) on bad options or a NULL `rank`.
#[no_mangle]
pub extern "C" fn gm_distributed_rank(opts: *const gm_load_options, rank: *mut i64) -> i32 {
    guard_status(|| {
        let settings = options::load_settings(opts)?;
        let r = distributed_rank(&settings.engine.load_options()).map_or(-1, |r| r as i64);
        write_out(rank, "rank", r)
    })
}

/// On a rank other than 0: loads this rank's part of the model at `path` with
/// `opts` (the same as rank 0's) and runs the steps rank 0's engine sends,
/// blocking until rank 0's model is closed. Writes the turns followed to
/// `*steps` when not NULL. Returns 0, or -1 (see `gm_last_error`) when this
/// process is not a follower rank, the load fails or the group breaks.
#[no_mangle]
pub extern "C" fn gm_follow(path: *const c_char, opts: *const gm_load_options, steps: *mut u64) -> i32 {
    guard_status(|| {
        let path = c_str(path, "path")?;
        let settings = options::load_settings(opts)?;
        settings.apply_process_wide()?;
        let (turns, _generations) = Engine::follow(Path::new(path), &settings.engine)?;
        if !steps.is_null() {
            write_out(steps, "steps", turns)?;
        }
        Ok(())
    })
}
