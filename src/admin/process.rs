//! The daemon process's own figures, as Prometheus' standard process
//! collector names them: CPU time, resident and virtual memory, open and
//! maximum file descriptors, start time. Read from `/proc/self` (Linux) at
//! the moment they are asked for.
//!
//! Owns reading and parsing those files. It must not keep state between
//! reads (but for the boot time, which does not change) nor format
//! anything: [`super::prometheus`] and [`super::api`] show the figures.
//! Where `/proc` cannot be read (another OS) a figure is `None` and its
//! readers leave it out.

use std::sync::OnceLock;

/// What `/proc/self/stat` says of the process.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    /// When the process started, in Unix seconds.
    pub start_time_s: f64,
}

/// Reads `/proc/self/stat` now.
pub fn stat() -> Option<Stat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_stat(&text, clock_ticks()?, page_size()?, boot_time()?)
}

/// Descriptors open now. Since Linux 6.2 the size of `/proc/self/fd` is that
/// count; on older kernels (size 0) the entries are counted, which at a
/// million connections takes a while: for scrapes, not for polling.
pub fn open_fds() -> Option<u64> {
    match std::fs::metadata("/proc/self/fd").ok()?.len() {
        0 => Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64),
        open => Some(open),
    }
}

/// The soft limit on open descriptors; `None` when unlimited.
pub fn max_fds() -> Option<u64> {
    parse_max_fds(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

/// `utime`, `stime`, `starttime`, `vsize` and `rss` of proc(5)'s
/// `/proc/pid/stat`. The command name (field 2) may hold spaces and
/// parentheses: fields are counted from the last `)`.
fn parse_stat(text: &str, ticks_per_s: u64, page_size: u64, boot_time_s: u64) -> Option<Stat> {
    let fields: Vec<&str> = text.get(text.rfind(')')? + 1..)?.split_whitespace().collect();
    // fields[0] is field 3 (state), so field n is fields[n - 3].
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let ticks = ticks_per_s as f64;
    Some(Stat {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        start_time_s: boot_time_s as f64 + field(22)? as f64 / ticks,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)?.saturating_mul(page_size),
    })
}

/// The `btime` line of `/proc/stat`: when the machine booted, Unix seconds.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines().find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
}

/// The soft limit of the `Max open files` line of `/proc/pid/limits`.
fn parse_max_fds(text: &str) -> Option<u64> {
    let line = text.lines().find_map(|line| line.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

fn boot_time() -> Option<u64> {
    static BOOT_TIME: OnceLock<Option<u64>> = OnceLock::new();
    *BOOT_TIME.get_or_init(|| parse_boot_time(&std::fs::read_to_string("/proc/stat").ok()?))
}

/// The unit of proc(5)'s times (`USER_HZ`).
fn clock_ticks() -> Option<u64> {
    // SAFETY: sysconf reads a constant of the system; it has no preconditions.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok().filter(|&t| t > 0)
}

fn page_size() -> Option<u64> {
    // SAFETY: as in `clock_ticks`.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok().filter(|&p| p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a parenthesis, as a thread may be named.
        let text = "4242 (heart line) x) S 1 4242 4242 0 -1 4194560 2000 0 0 0 \
                    250 50 0 0 20 0 9 0 123456 1073741824 3000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        let stat = parse_stat(text, 100, 4096, 1_700_000_000).unwrap();
        assert_eq!(
            stat,
            Stat {
                cpu_seconds: 3.0,
                start_time_s: 1_700_000_000.0 + 1_234.56,
                virtual_bytes: 1_073_741_824,
                resident_bytes: 3_000 * 4_096,
            }
        );
        assert_eq!(parse_stat("4242 (cut short) S 1 2", 100, 4096, 0), None);
    }

    #[test]
    fn boot_time_and_descriptor_limit() {
        assert_eq!(parse_boot_time("cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n"), Some(1_700_000_000));
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             127473               127473               processes \n\
                      Max open files            1048576              1048576              files     \n";
        assert_eq!(parse_max_fds(limits), Some(1_048_576));
        assert_eq!(parse_max_fds("Max open files            unlimited            unlimited            files\n"), None);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_reads() {
        let stat = stat().expect("/proc/self/stat");
        assert!(stat.resident_bytes > 0 && stat.virtual_bytes >= stat.resident_bytes, "{stat:?}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(stat.start_time_s > now - 86_400.0 * 365.0 && stat.start_time_s <= now + 1.0, "{stat:?}");
        let open = open_fds().expect("/proc/self/fd");
        assert!(open >= 3, "stdin, stdout, stderr at least: {open}");
        assert!(max_fds().is_none_or(|max| max >= open));
    }
}
