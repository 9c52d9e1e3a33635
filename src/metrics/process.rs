//! The process's own resource use, read from `/proc/self` on a scrape
//! (Linux; elsewhere the readings are absent).

/// RSS, CPU time and open file descriptors.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessStats {
    /// Resident set size in bytes.
    pub resident_bytes: Option<u64>,
    /// User plus system CPU time in seconds.
    pub cpu_seconds: Option<f64>,
    /// Open file descriptors (sockets included).
    pub open_fds: Option<u64>,
}

/// Clock ticks per second of `/proc/self/stat`'s times: 100 on every
/// Linux architecture we build for (USER_HZ is fixed by the kernel ABI).
const TICKS_PER_SECOND: f64 = 100.0;

/// Reads the current values.
pub fn read() -> ProcessStats {
    let resident_bytes = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map(|kib| kib * 1024);
    // Fields after the `(comm)`, which may itself hold spaces: utime and
    // stime are the 14th and 15th fields, the 12th and 13th after it.
    let cpu_seconds = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let after = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = after.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / TICKS_PER_SECOND)
        });
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|entries| entries.count() as u64);
    ProcessStats {
        resident_bytes,
        cpu_seconds,
        open_fds,
    }
}
