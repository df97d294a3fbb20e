//! `myelin-bench rss --pid PID`: the memory of any running process.

use std::path::Path;

use serde_json::json;

use crate::procstat;
use crate::report::{table, write_json};

pub fn run(pid: u32, json_path: Option<&Path>) -> anyhow::Result<()> {
    let status = procstat::status(pid)?;
    // smaps_rollup needs Linux 4.14 and ptrace access to the process; the
    // status figures are enough without it.
    let rollup = procstat::smaps_rollup(pid).ok();
    let mib = |kib: u64| format!("{:.1}", procstat::mib(kib));
    let mut rows = vec![
        vec!["VmRSS".into(), mib(status.vm_rss_kib)],
        vec!["VmHWM".into(), mib(status.vm_hwm_kib)],
        vec!["RssAnon".into(), mib(status.rss_anon_kib)],
        vec!["RssFile".into(), mib(status.rss_file_kib)],
    ];
    if let Some(pss) = rollup.as_ref().and_then(|r| r.get("Pss")) {
        rows.push(vec!["Pss".into(), mib(*pss)]);
    }
    print!("{}", table(&[&format!("pid {pid}"), "MiB"], &rows));
    println!("threads: {}", status.threads);
    if let Some(path) = json_path {
        write_json(
            path,
            &json!({ "pid": pid, "status": status.to_json(), "smaps_rollup_kib": rollup }),
        )?;
    }
    Ok(())
}
