//! `gomlx launch`: one command line started as N ranks of an MLX distributed group
//! (docs/distributed.md, "Launching"). The environment each rank gets is what MLX's
//! own launcher (`mlx.launch`) sets, so MLX's ring and NCCL backends find each other;
//! `GOMLX_DISTRIBUTED` tells a gomlx rank to load distributed.

use super::{runtime, usage, CliResult};
use clap::ValueEnum;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Ranks to start on this host (ring: processes on loopback; nccl: one per GPU).
    #[arg(short = 'n', long = "ranks", value_name = "N", conflicts_with = "hostfile")]
    pub ranks: Option<usize>,
    /// The MLX distributed backend (default: the host file's, else nccl when MLX has a GPU, else ring).
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// An mlx.launch host file (JSON: a list of {"ssh", "ips"} hosts, or {"backend", "envs", "hosts"});
    /// ranks of this host's entries start here, the others through ssh.
    #[arg(long, value_name = "FILE")]
    pub hostfile: Option<PathBuf>,
    /// First port: ring ranks listen on PORT, PORT+1, ...; nccl's coordinator on PORT
    /// (default: free ports on loopback; 32323 with a host file of several hosts).
    #[arg(long)]
    pub port: Option<u16>,
    /// Print each rank's host, environment and command as JSON and start nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The command each rank runs; a leading `gomlx` is this gomlx binary.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Ring,
    Nccl,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Ring => "ring",
            Backend::Nccl => "nccl",
        }
    }
}

/// One host of an mlx.launch host file.
#[derive(Clone, Debug, PartialEq)]
pub struct Host {
    pub ssh: String,
    pub ips: Vec<String>,
}

/// An mlx.launch host file: its hosts (rank i runs on host i), backend and extra environment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hostfile {
    pub hosts: Vec<Host>,
    pub backend: Option<String>,
    pub envs: Vec<String>,
}

/// Parses mlx.launch's host-file format (mlx/_distributed_utils/common.py: `Hostfile.from_file`).
pub fn parse_hostfile(text: &str) -> Result<Hostfile, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let (hosts, backend, envs) = match &v {
        Value::Array(a) => (a.clone(), None, Vec::new()),
        Value::Object(o) => {
            let hosts = o.get("hosts").and_then(Value::as_array).cloned().ok_or("no \"hosts\" list")?;
            let backend = match o.get("backend") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.is_empty() => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err("\"backend\" is not a string".into()),
            };
            let envs = match o.get("envs") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => a.iter().map(|e| e.as_str().map(str::to_string).ok_or("\"envs\" holds a non-string")).collect::<Result<_, _>>()?,
                Some(_) => return Err("\"envs\" is not a list".into()),
            };
            (hosts, backend, envs)
        }
        _ => return Err("expected a list of hosts or an object with \"hosts\"".into()),
    };
    if hosts.is_empty() {
        return Err("the host list is empty".into());
    }
    let hosts = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let ssh = h.get("ssh").and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or(format!("hosts[{i}]: no \"ssh\" host name"))?;
            let ips = match h.get("ips") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => {
                    a.iter().map(|ip| ip.as_str().map(str::to_string).ok_or(format!("hosts[{i}].ips holds a non-string"))).collect::<Result<_, _>>()?
                }
                Some(_) => return Err(format!("hosts[{i}].ips is not a list")),
            };
            Ok(Host { ssh: ssh.to_string(), ips })
        })
        .collect::<Result<Vec<_>, String>>()?;
    for e in &envs {
        let key = e.split('=').next().unwrap_or("");
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("envs: '{e}' is not NAME=VALUE"));
        }
    }
    Ok(Hostfile { hosts, backend, envs })
}

/// One rank to start: where, with which environment, running what.
#[derive(Clone, Debug)]
struct Rank {
    rank: usize,
    /// None: this host; Some: through ssh.
    ssh: Option<String>,
    env: BTreeMap<String, String>,
    /// Files to write before the command runs (remote ranks write them in their shell), env name → content.
    files: BTreeMap<String, String>,
}

fn is_local(host: &str) -> bool {
    if matches!(host, "127.0.0.1" | "localhost" | "::1") {
        return true;
    }
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok().or_else(|| std::env::var("HOSTNAME").ok()).unwrap_or_default();
    !name.trim().is_empty() && name.trim() == host
}

/// `n` ports free on loopback now (bound, read, released).
fn free_ports(n: usize) -> CliResult<Vec<u16>> {
    let listeners = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<std::io::Result<Vec<_>>>()?;
    Ok(listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<std::io::Result<Vec<_>>>()?)
}

fn plan(a: &Args) -> CliResult<(Backend, Vec<Rank>)> {
    let hostfile = match &a.hostfile {
        Some(p) => {
            let text = gomlx::files::read_text(p, gomlx::files::MAX_TEXT_FILE).map_err(|e| usage(format!("--hostfile {}: {e}", p.display())))?;
            Some(parse_hostfile(&text).map_err(|e| usage(format!("--hostfile {}: {e}", p.display())))?)
        }
        None => None,
    };
    let n = match (&hostfile, a.ranks) {
        (Some(h), _) => h.hosts.len(),
        (None, Some(0)) => return Err(usage("-n must be at least 1")),
        (None, Some(n)) => n,
        (None, None) => return Err(usage("give -n N (ranks on this host) or --hostfile FILE")),
    };
    let backend = match (a.backend, hostfile.as_ref().and_then(|h| h.backend.as_deref())) {
        (Some(b), _) => b,
        (None, Some("ring")) => Backend::Ring,
        (None, Some("nccl")) => Backend::Nccl,
        (None, Some(other)) => return Err(usage(format!("--hostfile: backend '{other}' is not one gomlx launches (ring, nccl)"))),
        (None, None) => {
            if gomlx::mlx::gpu_available() {
                Backend::Nccl
            } else {
                Backend::Ring
            }
        }
    };
    let hosts: Vec<Host> = match &hostfile {
        Some(h) => h.hosts.clone(),
        None => vec![Host { ssh: "127.0.0.1".into(), ips: vec!["127.0.0.1".into()] }; n],
    };
    let remote = hosts.iter().any(|h| !is_local(&h.ssh));
    let mut common = BTreeMap::new();
    for e in hostfile.as_ref().map(|h| h.envs.as_slice()).unwrap_or(&[]) {
        let (k, v) = e.split_once('=').unwrap_or((e, ""));
        common.insert(k.to_string(), v.to_string());
    }
    common.insert("GOMLX_DISTRIBUTED".into(), backend.name().into());
    let mut files = BTreeMap::new();
    match backend {
        Backend::Ring => {
            if let Some(i) = hosts.iter().position(|h| h.ips.is_empty()) {
                return Err(usage(format!("--hostfile: the ring backend needs an IP for every host (hosts[{i}] has none)")));
            }
            let ports = match (a.port, remote) {
                (Some(p), _) => (0..n).map(|i| p.checked_add(i as u16).ok_or_else(|| usage("--port: ports run past 65535"))).collect::<CliResult<Vec<_>>>()?,
                (None, true) => (0..n).map(|i| 32323 + i as u16).collect(),
                (None, false) => free_ports(n)?,
            };
            // mlx.launch's format: one list of "ip:port" per rank (the first IP of each host).
            let ring: Vec<Vec<String>> = hosts.iter().zip(&ports).map(|(h, p)| vec![format!("{}:{p}", h.ips[0])]).collect();
            if n > 1 {
                files.insert("MLX_HOSTFILE".to_string(), serde_json::to_string(&ring).expect("JSON of strings"));
            }
        }
        Backend::Nccl => {
            let ip = hosts[0].ips.first().cloned().ok_or_else(|| usage("--hostfile: rank 0 needs an IP reachable from all other ranks (nccl)"))?;
            let port = match a.port {
                Some(p) => p,
                None if remote => 12345,
                None => free_ports(1)?[0],
            };
            common.insert("NCCL_HOST_IP".into(), ip);
            common.insert("NCCL_PORT".into(), port.to_string());
            common.insert("MLX_WORLD_SIZE".into(), n.to_string());
        }
    }
    // NCCL: one GPU per rank, counted per host (mlx.launch: rank % ranks-per-host).
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let ranks = hosts
        .iter()
        .enumerate()
        .map(|(rank, h)| {
            let mut env = common.clone();
            env.insert("MLX_RANK".into(), rank.to_string());
            let local_index = seen.entry(if is_local(&h.ssh) { String::new() } else { h.ssh.clone() }).or_insert(0);
            if backend == Backend::Nccl {
                env.insert("CUDA_VISIBLE_DEVICES".into(), local_index.to_string());
            }
            *local_index += 1;
            Rank { rank, ssh: (!is_local(&h.ssh)).then(|| h.ssh.clone()), env, files: files.clone() }
        })
        .collect();
    Ok((backend, ranks))
}

/// The command line a rank runs: a leading `gomlx` becomes this binary.
fn program(command: &[String]) -> CliResult<Vec<String>> {
    let mut c = command.to_vec();
    if c.first().map(String::as_str) == Some("--") {
        c.remove(0);
    }
    if c.is_empty() {
        return Err(usage("launch: no command after --"));
    }
    if c[0] == "gomlx" {
        c[0] = std::env::current_exe().map_err(|e| runtime(format!("launch: cannot find this gomlx binary: {e}")))?.to_string_lossy().into_owned();
    }
    Ok(c)
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@,%+".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The shell script an ssh rank runs: its directory, environment, files, then the command.
fn remote_script(r: &Rank, cmd: &[String]) -> String {
    let mut s = String::new();
    if let Ok(d) = std::env::current_dir() {
        s += &format!("cd {} 2>/dev/null; ", shell_quote(&d.to_string_lossy()));
    }
    for (k, v) in &r.env {
        s += &format!("export {k}={}; ", shell_quote(v));
    }
    for (k, v) in &r.files {
        s += &format!("f=$(mktemp); printf '%s' {} > \"$f\"; export {k}=\"$f\"; ", shell_quote(v));
    }
    s += "exec ";
    s += &cmd.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ");
    s
}

static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGHUP => "SIGHUP",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        _ => "signal",
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(s)) => format!("was killed by signal {s} ({})", signal_name(s)),
        _ => "ended".into(),
    }
}

pub fn run(a: Args) -> CliResult {
    let cmd = program(&a.command)?;
    let (backend, ranks) = plan(&a)?;
    if a.dry_run {
        let out: Vec<Value> = ranks
            .iter()
            .map(|r| json!({"rank": r.rank, "host": r.ssh.clone().unwrap_or_else(|| "local".into()), "env": r.env, "files": r.files, "command": cmd}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&json!({"backend": backend.name(), "ranks": out})).expect("JSON"));
        return Ok(());
    }
    // Ring ranks on this host read their host list from a file, as under mlx.launch.
    let dir = std::env::temp_dir().join(format!("gomlx-launch-{}", std::process::id()));
    let _cleanup = TempDir(dir.clone());
    let mut local_files: BTreeMap<String, PathBuf> = BTreeMap::new();
    if ranks.iter().any(|r| r.ssh.is_none() && !r.files.is_empty()) {
        std::fs::create_dir_all(&dir)?;
        for (k, v) in &ranks[0].files {
            let p = dir.join(k.to_lowercase());
            std::fs::write(&p, v)?;
            local_files.insert(k.clone(), p);
        }
    }
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let mut children: Vec<Option<Rankp>> = Vec::new();
    let mut pumps = Vec::new();
    for r in &ranks {
        let mut c = match &r.ssh {
            None => {
                let mut c = Command::new(&cmd[0]);
                c.args(&cmd[1..]).envs(&r.env);
                for (k, p) in &local_files {
                    c.env(k, p);
                }
                c
            }
            Some(host) => {
                let mut c = Command::new("ssh");
                c.args(["-tt", "-o", "LogLevel=QUIET", host, &remote_script(r, &cmd)]);
                c
            }
        };
        if r.rank == 0 {
            c.stdin(Stdio::inherit()).stdout(Stdio::inherit()).stderr(Stdio::inherit());
        } else {
            c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        }
        // Each rank leads a process group of its own, so stopping it stops what it started;
        // except an interactive rank 0 (stdin a terminal), which must stay in the terminal's
        // foreground group to read it.
        let own_group = r.rank != 0 || !std::io::stdin().is_terminal();
        {
            use std::os::unix::process::CommandExt;
            if own_group {
                c.process_group(0);
            }
            #[cfg(target_os = "linux")]
            unsafe {
                // A launcher that dies (even by SIGKILL) takes its ranks with it.
                c.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        match c.spawn() {
            Ok(mut child) => {
                if let Some(err) = child.stderr.take() {
                    let rank = r.rank;
                    pumps.push(std::thread::spawn(move || prefix_lines(rank, err)));
                }
                children.push(Some(Rankp { child, own_group }));
            }
            Err(e) => {
                stop_all(&mut children, libc::SIGKILL);
                return Err(runtime(format!("launch: cannot start rank {} ({}): {e}", r.rank, cmd[0])));
            }
        }
    }
    let result = supervise(&mut children);
    // The pipes close when the ranks are gone; output still buffered is printed first.
    let deadline = Instant::now() + Duration::from_secs(2);
    for p in pumps {
        while !p.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if p.is_finished() {
            let _ = p.join();
        }
    }
    result
}

/// Waits for every rank; the first that fails (non-zero exit or a signal) ends the group.
fn supervise(children: &mut [Option<Rankp>]) -> CliResult {
    let mut failure: Option<String> = None;
    let mut stopping: Option<Instant> = None;
    let mut forwarded: Option<i32> = None;
    // When rank 0 ended well: the others (followers) should end within moments.
    let mut zero_done: Option<Instant> = None;
    loop {
        let sig = SIGNAL.swap(0, Ordering::SeqCst);
        if sig != 0 {
            forwarded = Some(sig);
            stop_all(children, sig);
            stopping.get_or_insert_with(Instant::now);
        }
        for (rank, slot) in children.iter_mut().enumerate() {
            let Some(p) = slot else { continue };
            match p.child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => {
                    *slot = None;
                    if rank == 0 && status.success() {
                        zero_done = Some(Instant::now());
                    }
                    if !status.success() && failure.is_none() && forwarded.is_none() {
                        failure = Some(format!("rank {rank} {}; the other ranks were stopped", describe(status)));
                        stop_all(children, libc::SIGTERM);
                        stopping = Some(Instant::now());
                        break;
                    } else if !status.success() && failure.is_none() {
                        failure = Some(format!("rank {rank} {} after {}", describe(status), signal_name(forwarded.unwrap_or(0))));
                    }
                }
                Err(e) => {
                    *slot = None;
                    failure.get_or_insert(format!("rank {rank}: cannot wait for it: {e}"));
                }
            }
        }
        if children.iter().all(Option::is_none) {
            break;
        }
        // After a failure, ranks that ignore SIGTERM for 5 s (a follower blocked in a
        // collective) are killed; after a forwarded signal rank 0 may drain for up to 60 s.
        let grace = Duration::from_secs(if forwarded.is_some() { 60 } else { 5 });
        if stopping.is_some_and(|t| t.elapsed() > grace) {
            stop_all(children, libc::SIGKILL);
        }
        if failure.is_none() && zero_done.is_some_and(|t| t.elapsed() > Duration::from_secs(20)) {
            let left: Vec<String> = children.iter().enumerate().filter(|(_, c)| c.is_some()).map(|(r, _)| r.to_string()).collect();
            failure = Some(format!("rank 0 ended but rank(s) {} still ran 20 s later; they were killed", left.join(", ")));
            stop_all(children, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    match failure {
        Some(m) => Err(runtime(format!("launch: {m}"))),
        None => Ok(()),
    }
}

fn stop_all(children: &mut [Option<Rankp>], sig: i32) {
    for p in children.iter_mut().flatten() {
        let pid = p.child.id() as libc::pid_t;
        unsafe { libc::kill(if p.own_group { -pid } else { pid }, sig) };
    }
}

/// Copies a rank's stderr to ours, each line prefixed with its rank.
fn prefix_lines(rank: usize, from: impl std::io::Read) {
    let mut r = BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let mut e = std::io::stderr().lock();
                let _ = write!(e, "[rank {rank}] ");
                let _ = e.write_all(&line);
                if !line.ends_with(b"\n") {
                    let _ = e.write_all(b"\n");
                }
            }
        }
    }
}

/// A started rank; `own_group`: it leads a process group (signals go to the group).
struct Rankp {
    child: Child,
    own_group: bool,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if Path::new(&self.0).exists() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
