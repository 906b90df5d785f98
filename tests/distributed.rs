//! MLX distributed over the ring backend on loopback: ranks are processes this
//! test starts (a test re-runs its own binary with `GOMLX_TEST_RANK` set and
//! plays the rank), with a host file it writes, as `mlx.launch` would.

use gomlx::mlx::distributed::Group;
use gomlx::mlx::{Array, Dtype};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Each rank's whole run, start-up included, must end by then (a hung ring is a failure).
const RANK_TIMEOUT: Duration = Duration::from_secs(120);

/// `n` ports that were free a moment ago on 127.0.0.1.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// A ring host file for `n` ranks on loopback (mlx.launch's format: one list of "ip:port" per rank).
fn hostfile(tag: &str, n: usize) -> PathBuf {
    let hosts: Vec<Vec<String>> = free_ports(n).into_iter().map(|p| vec![format!("127.0.0.1:{p}")]).collect();
    let path = std::env::temp_dir().join(format!("gomlx-ring-{tag}-{}.json", std::process::id()));
    std::fs::write(&path, serde_json::to_string(&hosts).unwrap()).unwrap();
    path
}

/// Runs `test` of this binary as `n` ranks; returns each rank's stdout, in rank order.
fn run_ranks(test: &str, n: usize) -> Vec<String> {
    let hosts = hostfile(test, n);
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<Child> = (0..n)
        .map(|rank| {
            Command::new(&exe)
                .args([test, "--exact", "--nocapture", "--test-threads=1", "-q"])
                .env("GOMLX_TEST_RANK", rank.to_string())
                .env("MLX_RANK", rank.to_string())
                .env("MLX_HOSTFILE", &hosts)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let start = Instant::now();
    let mut done = vec![None; n];
    while done.iter().any(Option::is_none) {
        for (i, c) in children.iter_mut().enumerate() {
            if done[i].is_none() {
                done[i] = c.try_wait().unwrap();
            }
        }
        if start.elapsed() > RANK_TIMEOUT {
            for c in &mut children {
                let _ = c.kill();
            }
            panic!("ranks of {test} still running after {RANK_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_file(&hosts);
    children
        .into_iter()
        .enumerate()
        .map(|(rank, c)| {
            let out = c.wait_with_output().unwrap();
            let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
            assert!(out.status.success(), "rank {rank} of {test} failed: {}\n{stdout}\n{stderr}", out.status);
            stdout
        })
        .collect()
}

/// This process's rank when a test runs it as one.
fn as_rank() -> Option<usize> {
    std::env::var("GOMLX_TEST_RANK").ok().map(|r| r.parse().unwrap())
}

/// The values a rank prints on its `result:` line.
fn result_of(stdout: &str) -> Vec<f32> {
    let line = stdout.lines().find_map(|l| l.strip_prefix("result: ")).unwrap_or_else(|| panic!("no result line in:\n{stdout}"));
    serde_json::from_str(line).unwrap()
}

#[test]
fn two_ranks_all_sum_and_gather() {
    if let Some(rank) = as_rank() {
        let g = Group::init("ring", true).unwrap();
        assert_eq!((g.rank(), g.size()), (rank, 2));
        let r = rank as f32;
        let x = Array::from_slice(&[1.0 + r, 10.0 * (r + 1.0), -0.5 * r], &[3]).unwrap();
        let sum = g.all_sum(&x).unwrap().to_vec::<f32>().unwrap();
        let gathered = g.all_gather(&x.reshape(&[1, 3]).unwrap()).unwrap();
        assert_eq!(gathered.shape(), vec![2, 3]);
        // Point to point: rank 0 sends, rank 1 receives.
        let p2p = if rank == 0 {
            g.send(&Array::from_slice(&[7.0f32, 8.0], &[2]).unwrap(), 1).unwrap().to_vec::<f32>().unwrap()
        } else {
            g.recv(&[2], Dtype::F32, 0).unwrap().to_vec::<f32>().unwrap()
        };
        let mut all = sum;
        all.extend(gathered.to_vec::<f32>().unwrap());
        all.extend(p2p);
        println!("result: {}", serde_json::to_string(&all).unwrap());
        return;
    }
    let outs = run_ranks("two_ranks_all_sum_and_gather", 2);
    // Rank 0 holds [1, 10, 0], rank 1 [2, 20, -0.5].
    let expected = [3.0, 30.0, -0.5, 1.0, 10.0, 0.0, 2.0, 20.0, -0.5, 7.0, 8.0];
    for (rank, out) in outs.iter().enumerate() {
        assert_eq!(result_of(out), expected, "rank {rank}");
    }
}

#[test]
fn a_missing_host_file_is_a_clear_error() {
    // The check runs in a child with a clean environment: MLX keeps a started backend per process.
    if std::env::var_os("GOMLX_TEST_STRICT").is_some() {
        let e = Group::init("ring", true).unwrap_err().to_string();
        assert!(e.contains("ring") && e.contains("MLX_HOSTFILE"), "{e}");
        println!("result: []");
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["a_missing_host_file_is_a_clear_error", "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env("GOMLX_TEST_STRICT", "1")
        .env_remove("MLX_HOSTFILE")
        .env_remove("MLX_RANK")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("result: []"), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
}
