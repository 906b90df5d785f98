//! The `gomlx` command: `generate`, `chat`, `classify`, `info`, `discover`,
//! `convert`, `bench`. One module per command under `src/cli/`.
//!
//! Exit codes: 0 success, 1 runtime error (model, I/O, MLX), 2 usage error.
//! Every error is one line on stderr: `gomlx: <message>`.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
