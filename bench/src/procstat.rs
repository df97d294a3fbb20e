//! A process's memory, read from /proc by pid (Linux only): `/proc/PID/status`
//! for VmRSS, VmHWM and the thread count, `/proc/PID/smaps_rollup` for what
//! the resident memory is made of. Works for any process, not only one the
//! bench started (e.g. a Synapse to compare with).

use std::collections::BTreeMap;

use anyhow::Context;
use serde_json::{Value, json};

/// The memory lines of `/proc/PID/status`, in KiB.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Resident set size now.
    pub vm_rss_kib: u64,
    /// Peak resident set size ("high water mark").
    pub vm_hwm_kib: u64,
    /// Resident anonymous memory (heap, stacks).
    pub rss_anon_kib: u64,
    /// Resident file-backed memory (the binary, shared libraries, mapped files).
    pub rss_file_kib: u64,
    pub rss_shmem_kib: u64,
    pub threads: u64,
}

impl Status {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let fields = parse_kv(text);
        let get = |k: &str| fields.get(k).copied();
        Ok(Self {
            vm_rss_kib: get("VmRSS").context("no VmRSS line (a kernel thread?)")?,
            vm_hwm_kib: get("VmHWM").context("no VmHWM line")?,
            rss_anon_kib: get("RssAnon").unwrap_or(0),
            rss_file_kib: get("RssFile").unwrap_or(0),
            rss_shmem_kib: get("RssShmem").unwrap_or(0),
            threads: get("Threads").unwrap_or(0),
        })
    }

    pub fn to_json(&self) -> Value {
        json!({
            "vm_rss_kib": self.vm_rss_kib,
            "vm_hwm_kib": self.vm_hwm_kib,
            "rss_anon_kib": self.rss_anon_kib,
            "rss_file_kib": self.rss_file_kib,
            "rss_shmem_kib": self.rss_shmem_kib,
            "vm_rss_mib": mib(self.vm_rss_kib),
            "vm_hwm_mib": mib(self.vm_hwm_kib),
            "threads": self.threads,
        })
    }
}

/// Reads `/proc/PID/status`.
pub fn status(pid: u32) -> anyhow::Result<Status> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    Status::parse(&text).with_context(|| format!("in {path}"))
}

/// Reads `/proc/PID/smaps_rollup`: every `Key: N kB` line (Rss, Pss,
/// Anonymous, Private_Dirty, ...), in KiB.
pub fn smaps_rollup(pid: u32) -> anyhow::Result<BTreeMap<String, u64>> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    Ok(parse_kv(&text)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect())
}

/// CPU time the process has used (user + system, all threads), from
/// fields 14 and 15 of `/proc/PID/stat`, in seconds.
pub fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_stat_cpu_ticks(&text)
        .map(|ticks| ticks as f64 / clock_ticks_per_sec())
        .with_context(|| format!("cannot parse {path}"))
}

/// utime + stime from a `/proc/PID/stat` line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after the last `)`.
fn parse_stat_cpu_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[allow(unsafe_code)] // libc calls, each with its SAFETY comment
fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// One reading of a process: memory and CPU time so far.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: std::time::Instant,
    pub status: Status,
    pub cpu_secs: f64,
}

impl Snapshot {
    pub fn take(pid: u32) -> anyhow::Result<Self> {
        Ok(Self {
            at: std::time::Instant::now(),
            status: status(pid)?,
            cpu_secs: cpu_secs(pid)?,
        })
    }

    /// The CPU the process used between `earlier` and this reading, in % of
    /// one core.
    pub fn cpu_percent_since(&self, earlier: &Snapshot) -> f64 {
        let wall = self.at.duration_since(earlier.at).as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        (self.cpu_secs - earlier.cpu_secs) / wall * 100.0
    }
}

/// KiB to MiB, rounded to 0.1.
pub fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

/// `Key:   123 kB` and `Key: 123` lines; other lines are skipped.
fn parse_kv(text: &str) -> BTreeMap<&str, u64> {
    text.lines()
        .filter_map(|line| {
            let (key, rest) = line.split_once(':')?;
            let mut words = rest.split_whitespace();
            let n = words.next()?.parse().ok()?;
            match words.next() {
                None | Some("kB") => Some((key.trim(), n)),
                Some(_) => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tmyelin\nUmask:\t0022\nState:\tS (sleeping)\nPid:\t4242\n\
VmPeak:\t  800000 kB\nVmHWM:\t   21344 kB\nVmRSS:\t   17920 kB\nRssAnon:\t    6144 kB\n\
RssFile:\t   11776 kB\nRssShmem:\t       0 kB\nThreads:\t5\nCpus_allowed:\t3\n\
Cpus_allowed_list:\t0-1\n";

    #[test]
    fn parses_status() {
        let s = Status::parse(STATUS).unwrap();
        assert_eq!(
            s,
            Status {
                vm_rss_kib: 17920,
                vm_hwm_kib: 21344,
                rss_anon_kib: 6144,
                rss_file_kib: 11776,
                rss_shmem_kib: 0,
                threads: 5,
            }
        );
        assert_eq!(mib(s.vm_rss_kib), 17.5);
    }

    #[test]
    fn stat_cpu_fields_after_the_command_name() {
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    123 45 0 0 20 0 5 0 100 800000 4480 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(line), Some(168));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        assert!(cpu_secs(std::process::id()).unwrap() >= 0.0);
    }

    #[test]
    fn status_without_memory_lines_is_an_error() {
        assert!(Status::parse("Name:\tkthreadd\nThreads:\t1\n").is_err());
    }

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        let s = status(pid).unwrap();
        assert!(s.vm_rss_kib > 0 && s.vm_hwm_kib >= s.vm_rss_kib);
        assert!(s.threads >= 1);
        let rollup = smaps_rollup(pid).unwrap();
        assert!(rollup.get("Rss").copied().unwrap_or(0) > 0);
    }
}
