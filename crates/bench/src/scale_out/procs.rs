//! Worker processes of the scale-out bench: the bench binary started again
//! with the hidden `scale-out-worker` subcommand, which runs a real worker
//! (`tenantplane_worker::start`, as `tenantplane worker` does) on its own
//! control-DB pool until its stdin closes.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tenantplane_control_db::ControlDb;
use tenantplane_worker::WorkerConfig;

/// Options of the hidden `tenantplane-bench scale-out-worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    #[arg(long)]
    control_url: String,
    #[arg(long)]
    threads: usize,
    #[arg(long)]
    pool: u32,
}

/// The child's side: start, say `ready`, run until stdin closes, stop.
pub fn worker_main(args: WorkerArgs) -> Result<()> {
    let db = ControlDb::open_with(&args.control_url, Some(args.pool))
        .context("opening the control database")?;
    let config = WorkerConfig {
        threads: args.threads,
        ..WorkerConfig::default()
    };
    let handle = tenantplane_worker::start(db, config).context("starting the worker")?;
    println!("ready");
    std::io::stdout().flush()?;
    // The parent closes our stdin to stop us.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    handle.stop_within(Duration::from_secs(5));
    Ok(())
}

/// A running worker process; stopped (stdin closed, waited for) on drop.
pub struct WorkerProc {
    pub child: Child,
    stdin: Option<ChildStdin>,
}

impl WorkerProc {
    pub fn spawn(control_url: &str, threads: usize, pool: u32) -> Result<WorkerProc> {
        let exe = std::env::current_exe().context("locating the bench binary")?;
        let mut child = Command::new(exe)
            .args([
                "scale-out-worker",
                "--control-url",
                control_url,
                "--threads",
                &threads.to_string(),
                "--pool",
                &pool.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a worker process")?;
        let stdin = child.stdin.take();
        Ok(WorkerProc { child, stdin })
    }

    /// Waits for the `ready` line.
    pub fn wait_ready(&mut self) -> Result<()> {
        let out = self.child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        if line.trim() != "ready" {
            bail!("a worker process did not start (said {line:?})");
        }
        Ok(())
    }

    /// User + system CPU seconds of the process so far.
    pub fn cpu_secs(&self) -> Result<f64> {
        super::stats::proc_cpu_secs(self.child.id())
    }

    pub fn stop(&mut self) -> Result<()> {
        drop(self.stdin.take());
        let status = self.child.wait()?;
        if !status.success() {
            bail!("a worker process ended with {status}");
        }
        Ok(())
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.stop();
        }
    }
}
