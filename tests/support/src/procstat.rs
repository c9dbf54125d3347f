//! CPU time of processes, read from `/proc`, for benchmarks that report what each part
//! of the system spent per request.

use std::fs;

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// One part of the system: the processes whose CPU time counts for it.
pub struct Part {
    pub name: &'static str,
    pids: Vec<u32>,
}

impl Part {
    pub fn of_pids(name: &'static str, pids: Vec<u32>) -> Part {
        Part { name, pids }
    }

    /// Every process whose command name is `comm` (PostgreSQL: one process per
    /// connection, so their sum is the server's time while the connections live).
    pub fn by_command(name: &'static str, comm: &str) -> Part {
        Part::of_pids(
            name,
            pids_where(|pid| command(pid).as_deref() == Some(comm)),
        )
    }

    /// The processes named `comm` whose command line mentions `needle` (the shared
    /// Redis on port 6379, not a test's private one).
    pub fn by_command_line(name: &'static str, comm: &str, needle: &str) -> Part {
        Part::of_pids(
            name,
            pids_where(|pid| {
                command(pid).as_deref() == Some(comm)
                    && fs::read(format!("/proc/{pid}/cmdline"))
                        .map(|c| String::from_utf8_lossy(&c).contains(needle))
                        .unwrap_or(false)
            }),
        )
    }
}

/// Every part of a running sumsvc, in the order benchmarks print them: `serve`, `work`,
/// RabbitMQ, Redis (the shared server on 6379), PostgreSQL, and this process (the load
/// client).
pub fn system(serve: u32, work: u32) -> Vec<Part> {
    vec![
        Part::of_pids("serve", vec![serve]),
        Part::of_pids("work", vec![work]),
        Part::by_command("rabbitmq", "beam.smp"),
        Part::by_command_line("redis", "redis-server", ":6379"),
        Part::by_command("postgres", "postgres"),
        Part::of_pids("client", vec![std::process::id()]),
    ]
}

/// User plus system CPU seconds of one process, None once it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields follow the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); fields[0] here is field 3.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / TICKS_PER_SECOND)
}

fn command(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim_end().to_owned())
}

fn pids_where(keep: impl Fn(u32) -> bool) -> Vec<u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|pid| keep(*pid))
        .collect()
}

/// CPU seconds each part spent between two readings.
pub struct CpuMeter {
    parts: Vec<Part>,
    /// Per part, per process: its CPU seconds at the start.
    start: Vec<Vec<Option<f64>>>,
}

impl CpuMeter {
    pub fn start(parts: Vec<Part>) -> CpuMeter {
        let start = parts
            .iter()
            .map(|part| part.pids.iter().map(|pid| cpu_seconds(*pid)).collect())
            .collect();
        CpuMeter { parts, start }
    }

    /// Each part's name and the CPU seconds it spent since `start`, counting the
    /// processes alive at both readings (a PostgreSQL backend may end in between).
    pub fn spent(&self) -> Vec<(&'static str, f64)> {
        self.parts
            .iter()
            .zip(&self.start)
            .map(|(part, start)| {
                let spent = part
                    .pids
                    .iter()
                    .zip(start)
                    .filter_map(|(pid, start)| Some(cpu_seconds(*pid)? - (*start)?))
                    .sum();
                (part.name, spent)
            })
            .collect()
    }
}

/// Resident set size of one process in bytes, None once it is gone.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}
