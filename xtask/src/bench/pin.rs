//! Where Envoy and the load generator run: Envoy on CPUs of its own and wrk on the others
//! (`taskset`), so the load generator never takes cycles from the proxy it measures. On a
//! 2-CPU machine that is possible at Envoy `--concurrency 1` only (Envoy on CPU 0, wrk on
//! CPU 1); at 2 the two share both CPUs, and the report says so.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

/// How one Envoy concurrency's scenarios ran.
#[derive(Debug, Clone, Serialize)]
pub struct Pinning {
    /// Envoy and wrk each on their own CPUs.
    pub pinned: bool,
    /// The CPUs Envoy was confined to (empty: unpinned).
    pub envoy_cpus: Vec<usize>,
    /// The CPUs wrk was confined to (empty: unpinned).
    pub wrk_cpus: Vec<usize>,
    /// wrk threads (no more than its CPUs when pinned).
    pub wrk_threads: u32,
    /// Envoy's `Cpus_allowed_list` as the kernel reported it once started: the pin, checked.
    pub envoy_cpus_allowed: String,
    /// One line for the report.
    pub note: String,
}

impl Pinning {
    /// The plan for Envoy `--concurrency` `workers` on a machine whose usable CPUs are
    /// `cpus`: Envoy on the first `workers` of them and wrk on the rest, when there is a rest
    /// and `taskset` is available; otherwise both unpinned, sharing every CPU.
    pub fn plan(
        workers: u32,
        cpus: &[usize],
        wanted: bool,
        taskset: bool,
        wrk_threads: u32,
    ) -> Self {
        let n = workers as usize;
        let unpinned = |why: String| {
            Self {
            pinned: false,
            envoy_cpus: Vec::new(),
            wrk_cpus: Vec::new(),
            wrk_threads,
            envoy_cpus_allowed: String::new(),
            note: format!(
                "unpinned: Envoy's {workers} worker(s) and wrk's {wrk_threads} thread(s) share {} CPU(s) ({why}), so wrk's cycles are taken from Envoy's",
                cpus.len()
            ),
        }
        };
        if !wanted {
            return unpinned("--no-pin".into());
        }
        if cpus.len() <= n {
            return unpinned(format!("no CPU left for wrk beside {workers} for Envoy"));
        }
        if !taskset {
            return unpinned("taskset not found".into());
        }
        let (envoy, wrk) = cpus.split_at(n);
        let threads = wrk_threads.min(u32::try_from(wrk.len()).unwrap_or(u32::MAX));
        Self {
            pinned: true,
            envoy_cpus: envoy.to_vec(),
            wrk_cpus: wrk.to_vec(),
            wrk_threads: threads,
            envoy_cpus_allowed: String::new(),
            note: format!(
                "pinned with taskset: Envoy ({workers} worker(s)) on CPU {}, wrk ({threads} thread(s)) on CPU {}",
                cpu_list(envoy),
                cpu_list(wrk)
            ),
        }
    }
}

/// `program`, confined to `cpus` with `taskset -c` (which execs it: the child's PID is the
/// program's), or as is when `cpus` is empty.
pub fn command(program: &Path, cpus: &[usize]) -> Command {
    if cpus.is_empty() {
        return Command::new(program);
    }
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(cpu_list(cpus)).arg(program);
    cmd
}

/// The CPUs this process may run on (`Cpus_allowed_list` of `/proc/self/status`), in order.
pub fn usable_cpus() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cpus = allowed_list(&status)
        .map(parse_cpu_list)
        .unwrap_or_default();
    if cpus.is_empty() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        (0..n).collect()
    } else {
        cpus
    }
}

/// A process's `Cpus_allowed_list`, as the kernel words it (`0-1`).
pub fn cpus_allowed_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .as_deref()
        .and_then(allowed_list)
        .unwrap_or_default()
        .to_owned()
}

fn allowed_list(status: &str) -> Option<&str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(str::trim)
}

/// `0-2,5` → `[0, 1, 2, 5]`; what does not parse is left out.
pub fn parse_cpu_list(list: &str) -> Vec<usize> {
    list.split(',')
        .filter_map(|part| {
            let part = part.trim();
            match part.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?..=b.parse().ok()?).collect::<Vec<_>>()),
                None => part.parse().ok().map(|c| vec![c]),
            }
        })
        .flatten()
        .collect()
}

/// `[0, 1, 2, 5]` → `0,1,2,5` (what `taskset -c` takes).
fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_lists() {
        assert_eq!(parse_cpu_list("0-1"), [0, 1]);
        assert_eq!(parse_cpu_list("0-2,5,7-8"), [0, 1, 2, 5, 7, 8]);
        assert_eq!(parse_cpu_list(""), Vec::<usize>::new());
        assert_eq!(
            allowed_list("Name:\tx\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1\n"),
            Some("0-1")
        );
    }

    #[test]
    fn pins_envoy_and_wrk_apart_only_when_a_cpu_is_left_for_wrk() {
        let one = Pinning::plan(1, &[0, 1], true, true, 2);
        assert!(one.pinned);
        assert_eq!((one.envoy_cpus, one.wrk_cpus), (vec![0], vec![1]));
        assert_eq!(one.wrk_threads, 1, "one wrk thread per CPU it has");
        let two = Pinning::plan(2, &[0, 1], true, true, 2);
        assert!(!two.pinned && two.envoy_cpus.is_empty() && two.wrk_threads == 2);
        assert!(two.note.starts_with("unpinned"), "{}", two.note);
        let wide = Pinning::plan(2, &[0, 1, 2, 3, 4, 5], true, true, 2);
        assert_eq!(
            (wide.envoy_cpus, wide.wrk_cpus, wide.wrk_threads),
            (vec![0, 1], vec![2, 3, 4, 5], 2)
        );
        assert!(!Pinning::plan(1, &[0, 1], false, true, 2).pinned);
        assert!(!Pinning::plan(1, &[0, 1], true, false, 2).pinned);
    }

    #[test]
    fn taskset_wraps_the_program() {
        let cmd = command(Path::new("/bin/envoy"), &[0, 2]);
        assert_eq!(cmd.get_program(), "taskset");
        let args: Vec<_> = cmd.get_args().collect();
        assert_eq!(args, ["-c", "0,2", "/bin/envoy"]);
        assert_eq!(
            command(Path::new("/bin/envoy"), &[]).get_program(),
            "/bin/envoy"
        );
    }
}
