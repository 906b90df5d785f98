//! `gomlx launch` as a process: ranks start with mlx.launch's environment, MLX's own ring
//! backend forms a group from it, a failing rank ends the group with an error naming it, and
//! signals reach every rank. Each test is bounded in time (`run` kills a launch after 60 s).

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `gomlx launch ARGS`, killing it if it takes longer than 60 s (a hang fails the test).
fn launch(args: &[&str]) -> (Output, Duration) {
    let t = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_gomlx"))
        .arg("launch")
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run gomlx");
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    });
    let out = child.wait_with_output().unwrap();
    drop(watchdog);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(60), "launch {args:?} hung");
    (out, took)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Lines of stderr a rank > 0 printed (the launcher prefixes them), by rank.
fn rank_lines(stderr: &str, rank: usize) -> Vec<String> {
    let p = format!("[rank {rank}] ");
    stderr.lines().filter_map(|l| l.strip_prefix(&p)).map(str::to_string).collect()
}

#[test]
fn every_rank_gets_the_ring_environment() {
    for n in [2usize, 4] {
        let script = r#"echo "out $MLX_RANK"; echo "env $MLX_RANK $GOMLX_DISTRIBUTED $(cat "$MLX_HOSTFILE")" >&2"#;
        let (o, _) = launch(&["-n", &n.to_string(), "--backend", "ring", "--", "sh", "-c", script]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{err}");
        // Only rank 0's stdout is forwarded.
        assert_eq!(text(&o.stdout), "out 0\n");
        // Rank 0's stderr unprefixed, the others' prefixed; all name one host list of n loopback ports.
        let zero = err.lines().find(|l| l.starts_with("env 0 ")).unwrap_or_else(|| panic!("no rank 0 line in {err}"));
        let hosts_text = zero.strip_prefix("env 0 ring ").unwrap();
        let hosts: Vec<Vec<String>> = serde_json::from_str(hosts_text).unwrap();
        assert_eq!(hosts.len(), n);
        let mut ports: Vec<&str> = hosts.iter().map(|h| h[0].strip_prefix("127.0.0.1:").expect("a loopback address")).collect();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), n, "distinct ports: {hosts:?}");
        for r in 1..n {
            assert_eq!(rank_lines(&err, r), vec![format!("env {r} ring {hosts_text}")], "{err}");
        }
    }
}

#[test]
fn mlx_forms_a_group_from_the_environment() {
    let python = root().join(".venv/bin/python");
    assert!(python.is_file(), "{} is missing: run scripts/setup", python.display());
    // MLX's own ring backend (the Python package of the same MLX) sums the ranks' values:
    // 1 + 2 + 3 + 4 = 10 on every rank.
    let prog = "import mlx.core as mx, sys\n\
                g = mx.distributed.init(backend='ring', strict=True)\n\
                s = mx.distributed.all_sum(mx.array([g.rank() + 1.0]), group=g, stream=mx.cpu)\n\
                print(g.rank(), g.size(), s.item(), file=sys.stderr)";
    let (o, _) = launch(&["-n", "4", "--", python.to_str().unwrap(), "-c", prog]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.lines().any(|l| l == "0 4 10.0"), "{err}");
    for r in 1..4 {
        assert_eq!(rank_lines(&err, r), vec![format!("{r} 4 10.0")], "{err}");
    }
}

#[test]
fn a_failing_rank_ends_the_group() {
    // Rank 1 fails at once while the others would run for 30 s: the group ends within seconds.
    let (o, took) = launch(&["-n", "3", "--", "sh", "-c", r#"if [ "$MLX_RANK" = 1 ]; then echo boom >&2; exit 3; fi; sleep 30"#]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("[rank 1] boom"), "{err}");
    assert!(err.contains("gomlx: launch: rank 1 exited with code 3; the other ranks were stopped"), "{err}");
    assert!(took < Duration::from_secs(20), "took {took:?}");

    // A rank killed by a signal is named with it.
    let (o, took) = launch(&["-n", "2", "--", "sh", "-c", r#"if [ "$MLX_RANK" = 1 ]; then kill -9 $$; fi; sleep 30"#]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("rank 1 was killed by signal 9 (SIGKILL)"), "{err}");
    assert!(took < Duration::from_secs(20), "took {took:?}");

    // A rank that ignores SIGTERM (as one blocked in a collective might) is killed after the grace period.
    let (o, took) = launch(&["-n", "2", "--", "sh", "-c", r#"trap '' TERM; if [ "$MLX_RANK" = 0 ]; then exit 4; fi; sleep 30"#]);
    assert!(text(&o.stderr).contains("rank 0 exited with code 4"), "{}", text(&o.stderr));
    assert!(took < Duration::from_secs(20), "took {took:?}");

    // A command that cannot start is an error naming the rank.
    let (o, _) = launch(&["-n", "2", "--", "/nonexistent/program"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("cannot start rank 0"), "{}", text(&o.stderr));
}

#[test]
fn sigterm_is_forwarded_to_every_rank() {
    let child = Command::new(env!("CARGO_BIN_EXE_gomlx"))
        .args(["launch", "-n", "2", "--", "sh", "-c", r#"trap 'echo "stopped $MLX_RANK" >&2; exit 0' TERM; echo ready >&2; while true; do sleep 0.1; done"#])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let t = Instant::now();
    let o = child.wait_with_output().unwrap();
    let err = text(&o.stderr);
    assert!(t.elapsed() < Duration::from_secs(20));
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.lines().any(|l| l == "stopped 0"), "{err}");
    let one = rank_lines(&err, 1);
    assert_eq!(one.first().map(String::as_str), Some("ready"), "{err}");
    assert_eq!(one.last().map(String::as_str), Some("stopped 1"), "{err}");
}

fn dry_run(hostfile: &str, extra: &[&str]) -> Result<Value, String> {
    let dir = root().join("target/launch-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("hosts-{}.json", extra.len() + hostfile.len()));
    std::fs::write(&path, hostfile).unwrap();
    let mut args = vec!["--hostfile", path.to_str().unwrap(), "--dry-run"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "gomlx", "serve", "--model", "m"]);
    let (o, _) = launch(&args);
    if o.status.code() == Some(0) {
        Ok(serde_json::from_slice(&o.stdout).unwrap())
    } else {
        Err(text(&o.stderr))
    }
}

#[test]
fn mlx_launch_host_files() {
    // Two Macs over Ethernet, mlx.launch's object form: ranks on other hosts go through ssh,
    // the ring's host list has one "ip:port" per rank from the starting port.
    let plan = dry_run(
        r#"{"backend": "ring", "envs": ["MLX_METAL_FAST_SYNCH=1"], "hosts": [
            {"ssh": "mac1.local", "ips": ["192.168.1.10"]}, {"ssh": "mac2.local", "ips": ["192.168.1.11"], "rdma": []}]}"#,
        &[],
    )
    .unwrap();
    assert_eq!(plan["backend"], "ring");
    let ranks = plan["ranks"].as_array().unwrap();
    assert_eq!(ranks.len(), 2);
    for (i, r) in ranks.iter().enumerate() {
        assert_eq!(r["rank"], i);
        assert_eq!(r["host"], format!("mac{}.local", i + 1));
        assert_eq!(r["env"]["MLX_RANK"], i.to_string());
        assert_eq!(r["env"]["GOMLX_DISTRIBUTED"], "ring");
        assert_eq!(r["env"]["MLX_METAL_FAST_SYNCH"], "1");
        assert_eq!(r["files"]["MLX_HOSTFILE"], r#"[["192.168.1.10:32323"],["192.168.1.11:32324"]]"#);
        assert!(r["command"][0].as_str().unwrap().ends_with("gomlx"), "{r}");
        assert_eq!(r["command"][1], "serve");
    }

    // The list form with nccl on one host and two GPUs: one GPU per rank, rank 0's IP coordinates.
    let plan = dry_run(r#"[{"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}, {"ssh": "localhost", "ips": ["127.0.0.1"]}]"#, &["--backend", "nccl", "--port", "4000"])
        .unwrap();
    let ranks = plan["ranks"].as_array().unwrap();
    for (i, r) in ranks.iter().enumerate() {
        assert_eq!(r["host"], "local");
        assert_eq!(r["env"]["CUDA_VISIBLE_DEVICES"], i.to_string());
        assert_eq!(r["env"]["MLX_WORLD_SIZE"], "2");
        assert_eq!(r["env"]["NCCL_HOST_IP"], "127.0.0.1");
        assert_eq!(r["env"]["NCCL_PORT"], "4000");
        assert_eq!(r["env"]["GOMLX_DISTRIBUTED"], "nccl");
    }

    // Bad host files are usage errors that say what is wrong.
    assert!(dry_run("[]", &[]).unwrap_err().contains("the host list is empty"));
    assert!(dry_run(r#"[{"ips": ["1.2.3.4"]}]"#, &[]).unwrap_err().contains("hosts[0]: no \"ssh\" host name"));
    assert!(dry_run(r#"[{"ssh": "a"}]"#, &["--backend", "ring"]).unwrap_err().contains("needs an IP for every host"));
    assert!(dry_run(r#"{"backend": "mpi", "hosts": [{"ssh": "a", "ips": ["1.2.3.4"]}]}"#, &[]).unwrap_err().contains("backend 'mpi'"));
    assert!(dry_run("{", &[]).unwrap_err().contains("not JSON"));
}

fn smollm2() -> PathBuf {
    let p = root().join(".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} is missing: run scripts/fetch-models", p.display());
    p
}

/// A `gomlx serve` (alone, or as `gomlx launch` ranks) on a free port; its stderr lines are kept.
struct Serve {
    child: std::process::Child,
    base: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Serve {
    fn start(launch_ranks: Option<usize>) -> Serve {
        use std::io::BufRead;
        let model = smollm2();
        let mut args: Vec<String> = Vec::new();
        if let Some(n) = launch_ranks {
            args.extend(["launch", "-n", &n.to_string(), "--", "gomlx"].map(String::from));
        }
        args.extend(["serve", "--model", model.to_str().unwrap(), "--port", "0", "--device", "cpu"].map(String::from));
        let mut child = Command::new(env!("CARGO_BIN_EXE_gomlx"))
            .args(&args)
            .current_dir(root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env_remove("GOMLX_API_KEY")
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["event"] == "listening" {
                        let _ = tx.send(v["address"].as_str().unwrap().to_string());
                    }
                }
                log2.lock().unwrap().push(line);
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(90)) {
            Ok(b) => b,
            Err(_) => {
                let _ = child.kill();
                panic!("the server did not start: {:?}", log.lock().unwrap());
            }
        };
        Serve { child, base, log }
    }

    fn complete(&self, body: Value) -> Value {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(120))).build().into();
        let mut resp = agent.post(&format!("{}/v1/completions", self.base)).header("content-type", "application/json").send(body.to_string()).unwrap();
        let text = resp.body_mut().read_to_string().unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    /// SIGTERM, then the exit code and the log.
    fn stop(mut self) -> (Option<i32>, Vec<String>) {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(200));
                return (s.code(), self.log.lock().unwrap().clone());
            }
            if t.elapsed() > Duration::from_secs(90) {
                let _ = self.child.kill();
                panic!("the server did not stop after SIGTERM: {:?}", self.log.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn rank_0_serves_and_the_other_ranks_follow() {
    // Greedy, seeded and concurrent requests: the answers of a 3-rank launch (SmolLM2's 9
    // heads and 3 kv heads split over the ranks; ranks 1 and 2 run every step rank 0 sends)
    // equal one process's.
    let bodies = [
        serde_json::json!({"prompt": "The capital of France is", "max_tokens": 12, "temperature": 0}),
        serde_json::json!({"prompt": "Once upon a time", "max_tokens": 10, "temperature": 0.9, "seed": 7}),
        serde_json::json!({"prompt": "1, 2, 3,", "max_tokens": 8, "temperature": 0, "n": 2}),
    ];
    let ask = |s: &Serve| -> Vec<Vec<String>> {
        std::thread::scope(|scope| {
            let hs: Vec<_> = bodies.iter().map(|b| scope.spawn(move || s.complete(b.clone()))).collect();
            hs.into_iter().map(|h| h.join().unwrap()["choices"].as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap().to_string()).collect()).collect()
        })
    };
    let single = Serve::start(None);
    let want = ask(&single);
    let (code, _) = single.stop();
    assert_eq!(code, Some(0));
    assert!(want[0][0].contains("Paris"), "{want:?}");

    let launched = Serve::start(Some(3));
    let got = ask(&launched);
    let again = ask(&launched);
    let (code, log) = launched.stop();
    assert_eq!(got, want, "{log:?}");
    assert_eq!(again, want, "{log:?}");
    // SIGTERM drained rank 0; its engine's stop ended ranks 1 and 2, which had run every generation (8).
    assert_eq!(code, Some(0), "{log:?}");
    for rank in [1, 2] {
        let prefix = format!("[rank {rank}] ");
        let followed =
            log.iter().filter_map(|l| l.strip_prefix(&prefix)).filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|v| v["event"] == "followed");
        let followed = followed.unwrap_or_else(|| panic!("no report from rank {rank}: {log:?}"));
        assert_eq!(followed["generations"], 8, "{followed}");
        assert!(followed["steps"].as_u64().unwrap() >= 10, "{followed}");
    }
}
