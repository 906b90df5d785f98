//! Argument parsing, shared options, errors and progress display of the `gomlx` command.

mod bench;
mod bench_streams;
mod chat;
mod classify;
mod convert;
mod generate;
mod info;
mod launch;
mod lora;
mod serve;

use clap::{Parser, Subcommand, ValueEnum};
use gomlx::engine::{Engine, EngineOptions};
use gomlx::mlx::{DeviceKind, Dtype};
use gomlx::sample::{Constraint, SamplerConfig};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "gomlx", version, about = "An LLM engine on Apple's MLX: run, chat, classify, convert and benchmark models", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt (the model's chat template applied), streamed to stdout.
    Generate(generate::Args),
    /// Interactive chat; the KV cache is kept across turns (/reset, /exit).
    Chat(chat::Args),
    /// Next-token classification of prompts (one per line), JSON Lines out.
    Classify(classify::Args),
    /// Model information as JSON; with no model, MLX version, device and a check computation.
    Info(info::InfoArgs),
    /// Find model directories and .gguf files below a directory (JSON).
    Discover(info::DiscoverArgs),
    /// Convert a GGUF file into a Hugging Face style directory (gomlx and mlx-lm load it).
    Convert(convert::Args),
    /// Measure load, prefill, decode, time to first token, classify and memory; optionally against mlx-lm.
    Bench(bench::Args),
    /// LoRA fine-tuning from JSONL, adapters in mlx-lm's layout.
    Lora(lora::Args),
    /// An OpenAI- and Ollama-compatible HTTP server with a web chat page (docs/server.md).
    Serve(serve::Args),
    /// Start a command as N ranks of an MLX distributed group (ring on loopback, NCCL one per GPU, or an mlx.launch host file).
    Launch(launch::Args),
}

/// How a command failed: usage errors exit 2, runtime errors 1.
#[derive(Debug)]
pub enum CliError {
    Usage(String),
    Runtime(String),
    /// Stdout was closed by the reader (e.g. `| head`): stop quietly.
    BrokenPipe,
}

pub type CliResult<T = ()> = Result<T, CliError>;

impl From<gomlx::Error> for CliError {
    fn from(e: gomlx::Error) -> Self {
        CliError::Runtime(e.to_string())
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CliError::BrokenPipe
        } else {
            CliError::Runtime(e.to_string())
        }
    }
}

pub fn usage(msg: impl Into<String>) -> CliError {
    CliError::Usage(msg.into())
}

pub fn runtime(msg: impl Into<String>) -> CliError {
    CliError::Runtime(msg.into())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand { ExitCode::from(2) } else { ExitCode::SUCCESS };
                }
                _ => {
                    // clap's first line, without its "error: " prefix and styling.
                    let text = e.render().to_string();
                    let first = text.lines().next().unwrap_or("invalid arguments");
                    let msg = first.strip_prefix("error: ").unwrap_or(first);
                    eprintln!("gomlx: {} (see 'gomlx --help')", one_line(msg));
                    return ExitCode::from(2);
                }
            }
        }
    };
    // A panic anywhere is one line on stderr and exit 1, as every other
    // runtime error (README): the hook prints nothing, the main thread's
    // panic is caught here and other threads' panics surface as errors where
    // they are joined.
    std::panic::set_hook(Box::new(|_| {}));
    let result = gomlx::panics::catch(move || run_command(cli.command)).unwrap_or_else(|what| Err(runtime(format!("internal error (panic): {what}"))));
    match result {
        Ok(()) | Err(CliError::BrokenPipe) => ExitCode::SUCCESS,
        Err(CliError::Usage(m)) => {
            eprintln!("gomlx: {}", one_line(&m));
            ExitCode::from(2)
        }
        Err(CliError::Runtime(m)) => {
            eprintln!("gomlx: {}", one_line(&m));
            ExitCode::from(1)
        }
    }
}

fn run_command(command: Command) -> CliResult {
    match command {
        Command::Generate(a) => generate::run(a),
        Command::Chat(a) => chat::run(a),
        Command::Classify(a) => classify::run(a),
        Command::Info(a) => info::run_info(a),
        Command::Discover(a) => info::run_discover(a),
        Command::Convert(a) => convert::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Lora(a) => lora::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Launch(a) => launch::run(a),
    }
}

// ---------------------------------------------------------------------------
// Shared options

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Gpu,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    #[value(alias = "bfloat16")]
    Bf16,
    #[value(alias = "float16")]
    F16,
    #[value(alias = "float32")]
    F32,
}

impl DtypeArg {
    pub fn dtype(self) -> Dtype {
        match self {
            DtypeArg::Bf16 => Dtype::BF16,
            DtypeArg::F16 => Dtype::F16,
            DtypeArg::F32 => Dtype::F32,
        }
    }
}

/// Which model to load and how.
#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// Model: a Hugging Face style directory (config.json + safetensors) or a .gguf file.
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// How to load a model: the engine flags `serve` shares with the one-model commands.
#[derive(clap::Args, Clone, Debug)]
pub struct EngineArgs {
    /// Device (default: the GPU when MLX has one, else the CPU).
    #[arg(long, value_enum)]
    pub device: Option<DeviceArg>,
    /// Compute dtype (default: the checkpoint's; float32 for GGUF).
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,
    /// Longest sequence (prompt + output) a request may reach (default: the model's).
    #[arg(long, value_name = "TOKENS")]
    pub context_length: Option<usize>,
    /// CPU: widen bf16/quantised weights to the float32 compute dtype at load
    /// (fastest decode, 2-7x the memory) or keep them as stored and widen per
    /// use (the checkpoint's memory). Default: widened when that fits half the RAM.
    #[arg(long, value_enum)]
    pub weights: Option<WeightsArg>,
    /// A LoRA adapter directory (adapters.safetensors + adapter_config.json, from gomlx lora or mlx_lm.lora) to apply.
    #[arg(long, value_name = "DIR")]
    pub adapter_path: Option<PathBuf>,
    /// A device-strategy knob, NAME=VALUE (repeatable; docs/tuning.md lists them),
    /// e.g. --tune compile=true --tune gpu_dense_qmm_rows=64.
    #[arg(long, value_name = "NAME=VALUE")]
    pub tune: Vec<String>,
    /// Engines, each a whole copy of the model, serving requests by least outstanding work
    /// (throughput; on GPUs replica i runs on GPU i, on the CPU all share it). Default 1.
    #[arg(long, value_name = "N")]
    pub replicas: Option<usize>,
    /// Split the model over the ranks of an MLX distributed group (tensor
    /// parallel; every rank runs the same command, rank 0 prints; docs/distributed.md).
    /// Default: GOMLX_DISTRIBUTED, else off.
    #[arg(long, value_enum, value_name = "BACKEND")]
    pub distributed: Option<DistributedArg>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DistributedArg {
    Ring,
    Nccl,
    Mpi,
    Jaccl,
    Any,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WeightsArg {
    Widened,
    Stored,
}

impl ModelArgs {
    pub fn engine_options(&self) -> CliResult<EngineOptions> {
        self.engine.engine_options()
    }
}

impl EngineArgs {
    /// The `--distributed` backend's name.
    pub fn distributed_name(&self) -> Option<String> {
        self.distributed.and_then(|d| d.to_possible_value()).map(|v| v.get_name().to_string())
    }

    /// Whether this process is a rank other than 0 of a split model, by the
    /// environment the launcher set (MLX_RANK, or Open MPI's rank).
    pub fn is_follower(&self) -> bool {
        self.engine_options().is_ok_and(|o| gomlx::engine::distributed_rank(&o.load_options()).is_some_and(|r| r > 0))
    }

    pub fn engine_options(&self) -> CliResult<EngineOptions> {
        let mut o = EngineOptions {
            device: self.device.map(|d| match d {
                DeviceArg::Cpu => DeviceKind::Cpu,
                DeviceArg::Gpu => DeviceKind::Gpu,
            }),
            dtype: self.dtype.map(DtypeArg::dtype),
            context_length: self.context_length,
            widen: self.weights.map(|w| w == WeightsArg::Widened),
            adapter: self.adapter_path.clone(),
            replicas: self.replicas,
            distributed: self.distributed_name(),
            ..Default::default()
        };
        if self.replicas == Some(0) {
            return Err(usage("--replicas must be at least 1"));
        }
        for t in &self.tune {
            let (name, value) = t.split_once('=').ok_or_else(|| usage(format!("--tune {t}: expected NAME=VALUE")))?;
            o.set_knob(name.trim(), value).map_err(|e| usage(e.to_string()))?;
        }
        Ok(o)
    }
}

/// Sampling flags (mlx_lm.generate's names).
#[derive(clap::Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temp: f32,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Keep only the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Keep tokens at least this fraction as likely as the top one (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// Penalty for tokens seen in the last --repetition-context-size tokens (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// How many recent tokens the repetition penalty looks at.
    #[arg(long, default_value_t = 20)]
    pub repetition_context_size: usize,
    /// PRNG seed (the same seed gives the same tokens).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Constrain the output to JSON valid under this JSON Schema: a file, or the schema itself.
    #[arg(long, value_name = "FILE|JSON", group = "constraint")]
    pub json_schema: Option<String>,
    /// Constrain the output to one JSON object.
    #[arg(long, group = "constraint")]
    pub json_object: bool,
    /// Constrain the whole output to match this regular expression.
    #[arg(long, value_name = "REGEX", group = "constraint")]
    pub regex: Option<String>,
    /// Constrain the output to this Lark grammar (llguidance's dialect; docs/sampling.md).
    #[arg(long, value_name = "FILE", group = "constraint")]
    pub grammar: Option<PathBuf>,
    /// Constrain the output to exactly one of these strings (comma-separated).
    #[arg(long, value_name = "A,B,C", value_delimiter = ',', group = "constraint")]
    pub choice: Option<Vec<String>>,
}

/// `--json-schema`'s value: JSON when it parses as such (it starts with `{` or is `true`/`false`), else a file.
fn read_schema(arg: &str) -> CliResult<serde_json::Value> {
    let t = arg.trim_start();
    let text = if t.starts_with('{') || t == "true" || t == "false" {
        arg.to_string()
    } else {
        gomlx::files::read_text(Path::new(arg), gomlx::files::MAX_TEXT_FILE).map_err(|e| usage(format!("--json-schema {arg}: {e}")))?
    };
    serde_json::from_str(&text).map_err(|e| usage(format!("--json-schema: not JSON: {e}")))
}

impl SamplingArgs {
    /// The one constraint flag given, if any (clap lets at most one through).
    pub fn constraint(&self) -> CliResult<Option<Constraint>> {
        Ok(if let Some(s) = &self.json_schema {
            Some(Constraint::JsonSchema(read_schema(s)?))
        } else if self.json_object {
            Some(Constraint::JsonObject)
        } else if let Some(r) = &self.regex {
            Some(Constraint::Regex(r.clone()))
        } else if let Some(f) = &self.grammar {
            let text = gomlx::files::read_text(f, gomlx::files::MAX_TEXT_FILE).map_err(|e| usage(format!("--grammar {}: {e}", f.display())))?;
            Some(Constraint::Lark(text))
        } else {
            self.choice.as_ref().map(|c| Constraint::Choice(c.clone()))
        })
    }

    pub fn config(&self) -> CliResult<SamplerConfig> {
        let c = SamplerConfig {
            temperature: self.temp,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            repetition_context_size: self.repetition_context_size,
            seed: self.seed,
            constraint: self.constraint()?,
            ..SamplerConfig::default()
        };
        // Bad values are usage errors, reported before the model loads.
        c.validate().map_err(|e| usage(e.to_string().trim_start_matches("invalid argument: ").to_string()))?;
        Ok(c)
    }
}

// ---------------------------------------------------------------------------
// Loading, progress, output

pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// A spinner on stderr when it is a terminal; None otherwise.
pub fn spinner(msg: String) -> Option<ProgressBar> {
    if !stderr_is_terminal() {
        return None;
    }
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").unwrap());
    pb.set_message(msg);
    pb.enable_steady_tick(Duration::from_millis(100));
    Some(pb)
}

/// A progress bar of `len` steps on stderr when it is a terminal; None otherwise.
pub fn bar(len: u64, msg: String) -> Option<ProgressBar> {
    if !stderr_is_terminal() {
        return None;
    }
    let pb = ProgressBar::new(len);
    pb.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed}<{eta}").unwrap().progress_chars("=> "));
    pb.set_message(msg);
    Some(pb)
}

/// Checks that a model path exists and names what it is, for clear errors.
pub fn check_model_path(path: &Path) -> CliResult<()> {
    if path.as_os_str().is_empty() {
        return Err(runtime("the model path is empty (expected a model directory or a .gguf file)"));
    }
    if !path.exists() {
        return Err(runtime(format!("{}: no such model (expected a model directory or a .gguf file)", path.display())));
    }
    if path.is_file() && path.extension().is_none_or(|e| e != "gguf") {
        return Err(runtime(format!("{}: not a model (expected a model directory or a .gguf file)", path.display())));
    }
    if path.is_dir() && !path.join("config.json").is_file() {
        return Err(runtime(format!("{}: not a model directory (no config.json)", path.display())));
    }
    Ok(())
}

/// A rank other than 0 under `gomlx launch`: loads the model, runs the steps rank 0 sends
/// until rank 0's engine stops, and exits. Signals are left to rank 0 (the launcher forwards
/// them to every rank; a follower stops when rank 0 says so, or is killed with the group).
pub fn follow(model: &Path, opts: &EngineOptions) -> CliResult {
    check_model_path(model)?;
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
    let rank = gomlx::engine::distributed_rank(&opts.load_options()).unwrap_or(0);
    let (steps, generations) = Engine::follow(model, opts)?;
    eprintln!("{}", serde_json::json!({"event": "followed", "rank": rank, "steps": steps, "generations": generations}));
    Ok(())
}

/// Loads a model with a spinner; returns the engine and the load time in seconds. A
/// follower rank (`gomlx launch`) follows rank 0 instead and exits when it stops.
pub fn load_engine(args: &ModelArgs) -> CliResult<(Engine, f64)> {
    check_model_path(&args.model)?;
    if args.engine.is_follower() {
        let r = follow(&args.model, &args.engine_options()?);
        std::process::exit(match r {
            Ok(()) => 0,
            Err(CliError::Runtime(m)) | Err(CliError::Usage(m)) => {
                eprintln!("gomlx: {}", one_line(&m));
                1
            }
            Err(CliError::BrokenPipe) => 0,
        });
    }
    let pb = spinner(format!("loading {}", args.model.display()));
    let t = Instant::now();
    let engine = Engine::load(&args.model, &args.engine_options()?);
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let engine = engine?;
    if engine.info().rank != 0 {
        // SPMD: every rank runs the same command; rank 0 alone prints (docs/distributed.md).
        silence_stdout()?;
    }
    Ok((engine, t.elapsed().as_secs_f64()))
}

/// Points this process's stdout at /dev/null (a follower rank of a split model).
pub fn silence_stdout() -> CliResult<()> {
    use std::os::fd::AsRawFd;
    extern "C" {
        fn dup2(old: i32, new: i32) -> i32;
    }
    std::io::stdout().flush()?;
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    // The file stays open until dup2 has copied its descriptor onto stdout's.
    if unsafe { dup2(null.as_raw_fd(), std::io::stdout().as_raw_fd()) } < 0 {
        return Err(runtime(format!("cannot silence stdout of a follower rank: {}", std::io::Error::last_os_error())));
    }
    Ok(())
}

/// Writes to stdout and flushes (streamed tokens appear as they come).
pub fn out(s: &str) -> CliResult<()> {
    let mut o = std::io::stdout().lock();
    o.write_all(s.as_bytes())?;
    o.flush()?;
    Ok(())
}

/// Reads all of stdin; a usage error when stdin is a terminal and nothing is piped.
pub fn read_stdin(what: &str) -> CliResult<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(usage(format!("no {what}: give it as an argument or pipe it on stdin")));
    }
    let mut s = String::new();
    std::io::Read::read_to_string(&mut stdin.lock(), &mut s)?;
    Ok(s)
}

pub fn gib(bytes: usize) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}
