//! Figures: percentiles, and CPU time (per process and per thread) from /proc.

use std::collections::BTreeMap;
use std::time::Duration;

/// CPU seconds (user + system) of a process, from /proc/<pid>/stat.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    stat_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// utime + stime of a `stat` file's text (a process's or a thread's), in seconds.
fn stat_cpu_seconds(stat: &str) -> Option<f64> {
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

/// CPU spent over a stretch of a run, by the broker (when its pid is known;
/// a cluster's broker is all its nodes' processes), by the engine's
/// processes between them (a cluster's nats-servers), and by this tool.
pub struct CpuMeter {
    pid: Option<u32>,
    broker: Option<f64>,
    /// More broker processes (a cluster's other nodes), each with its start.
    nodes: Vec<(u32, Option<f64>)>,
    /// The engine's processes, each with its start.
    engine: Vec<(u32, Option<f64>)>,
    tool: Option<f64>,
}

/// CPU-seconds of every process since its start value; `None` if any
/// cannot be read.
fn sum_since(processes: &[(u32, Option<f64>)]) -> Option<f64> {
    processes
        .iter()
        .map(|(pid, before)| Some(cpu_seconds(*pid)? - (*before)?))
        .sum()
}

/// What a [`CpuMeter`] read.
#[derive(Clone, Copy)]
pub struct CpuUsed {
    /// The broker's CPU-seconds, when its pid was given.
    pub broker: Option<f64>,
    /// The engine's CPU-seconds, when its processes were given.
    pub engine: Option<f64>,
    /// The tool's own CPU-seconds.
    pub tool: f64,
}

impl CpuMeter {
    /// Starts measuring now.
    pub fn start(pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            pid,
            broker: pid.and_then(cpu_seconds),
            nodes: Vec::new(),
            engine: Vec::new(),
            tool: own_cpu_seconds(),
        }
    }

    /// Also counts the broker processes `nodes` as the broker, and measures
    /// the engine's processes `engine` separately (a cluster target).
    pub fn with_processes(mut self, nodes: &[u32], engine: &[u32]) -> CpuMeter {
        let now = |pid: &u32| (*pid, cpu_seconds(*pid));
        self.nodes = nodes.iter().map(now).collect();
        self.engine = engine.iter().map(now).collect();
        self
    }

    /// CPU used since `start`.
    pub fn used(&self) -> CpuUsed {
        let since = |before: Option<f64>, now: Option<f64>| Some(now? - before?);
        CpuUsed {
            broker: since(self.broker, self.pid.and_then(cpu_seconds))
                .and_then(|first| Some(first + sum_since(&self.nodes)?)),
            engine: (!self.engine.is_empty())
                .then(|| sum_since(&self.engine))
                .flatten(),
            tool: since(self.tool, own_cpu_seconds()).unwrap_or(0.0),
        }
    }
}

/// Per thread of a process: (thread name, CPU-seconds), from /proc/<pid>/task/*/stat.
fn thread_cpu_seconds(pid: u32) -> BTreeMap<u32, (String, f64)> {
    let mut threads = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        // A thread may end between listing and reading: skip it.
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let name = stat
            .split_once('(')
            .and_then(|(_, rest)| rest.rsplit_once(')'))
            .map_or_else(String::new, |(name, _)| name.to_owned());
        if let Some(seconds) = stat_cpu_seconds(&stat) {
            threads.insert(tid, (name, seconds));
        }
    }
    threads
}

/// CPU of each broker thread over a stretch of a run: shows whether one
/// thread (a single router task's, say) is the bottleneck.
pub struct ThreadMeter {
    pid: u32,
    before: BTreeMap<u32, (String, f64)>,
}

/// What a [`ThreadMeter`] read.
#[derive(Clone, Debug)]
pub struct ThreadsUsed {
    /// The busiest thread's name and id.
    pub busiest: String,
    /// The busiest thread's CPU over all the broker's thread CPU (0 to 1).
    pub busiest_share: f64,
    /// Threads that used any CPU (at the 10 ms resolution of /proc).
    pub working: usize,
}

impl ThreadMeter {
    /// Starts measuring the threads of `pid` now.
    pub fn start(pid: u32) -> ThreadMeter {
        ThreadMeter {
            pid,
            before: thread_cpu_seconds(pid),
        }
    }

    /// Thread CPU since `start`; `None` when no thread used any (or the
    /// process is gone). Threads that ended meanwhile are not counted.
    pub fn used(&self) -> Option<ThreadsUsed> {
        let deltas: Vec<(u32, String, f64)> = thread_cpu_seconds(self.pid)
            .into_iter()
            .map(|(tid, (name, now))| {
                let before = self.before.get(&tid).map_or(0.0, |(_, s)| *s);
                (tid, name, now - before)
            })
            .filter(|(_, _, used)| *used > 0.0)
            .collect();
        let total: f64 = deltas.iter().map(|(_, _, used)| used).sum();
        let (tid, name, most) = deltas.iter().max_by(|a, b| a.2.total_cmp(&b.2)).cloned()?;
        Some(ThreadsUsed {
            busiest: format!("{name} ({tid})"),
            busiest_share: most / total,
            working: deltas.len(),
        })
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
