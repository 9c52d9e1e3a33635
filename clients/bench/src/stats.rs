//! Figures: percentiles and CPU time from /proc.

use std::time::Duration;

/// CPU seconds (user + system) of a process, from /proc/<pid>/stat.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The `p` quantile of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// This process's own CPU seconds, to show when the tool is the bottleneck.
fn own_cpu_seconds() -> Option<f64> {
    cpu_seconds(std::process::id())
}

/// CPU spent over a stretch of a run, by the broker (when its pid is known)
/// and by this tool.
pub struct CpuMeter {
    pid: Option<u32>,
    broker: Option<f64>,
    tool: Option<f64>,
}

/// What a [`CpuMeter`] read.
#[derive(Clone, Copy)]
pub struct CpuUsed {
    /// The broker's CPU-seconds, when its pid was given.
    pub broker: Option<f64>,
    /// The tool's own CPU-seconds.
    pub tool: f64,
}

impl CpuMeter {
    /// Starts measuring now.
    pub fn start(pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            pid,
            broker: pid.and_then(cpu_seconds),
            tool: own_cpu_seconds(),
        }
    }

    /// CPU used since `start`.
    pub fn used(&self) -> CpuUsed {
        let since = |before: Option<f64>, now: Option<f64>| Some(now? - before?);
        CpuUsed {
            broker: since(self.broker, self.pid.and_then(cpu_seconds)),
            tool: since(self.tool, own_cpu_seconds()).unwrap_or(0.0),
        }
    }
}

/// Resident memory of a process in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
