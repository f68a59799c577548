//! Samples another process's CPU time and resident memory from /proc, for
//! server CPU per operation and bytes per session (`--server-pid`), and the
//! kernel's UDP counters (/proc/net/snmp), for datagrams the kernel dropped
//! before the daemon saw them. Reads only; never writes /proc.

use std::fs;
use std::io;

/// Clock ticks per second for /proc/PID/stat (`getconf CLK_TCK`; 100 on
/// every Linux architecture this runs on).
const TICKS_PER_S: f64 = 100.0;

/// One reading of a process.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Sample {
    /// User + system CPU seconds since the process started.
    pub cpu_s: f64,
    /// Resident set size in bytes (VmRSS).
    pub rss_bytes: u64,
}

/// Reads /proc/PID/stat and /proc/PID/status.
pub(crate) fn sample(pid: u32) -> io::Result<Sample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| bad("no ')' in stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name, field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
    let ticks =
        |i: usize| -> io::Result<u64> { fields.get(i).and_then(|f| f.parse().ok()).ok_or_else(|| bad("short stat")) };
    let cpu_s = (ticks(11)? + ticks(12)?) as f64 / TICKS_PER_S;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("no VmRSS in status"))?;
    Ok(Sample { cpu_s, rss_bytes: rss_kb * 1024 })
}

/// [`sample`] of `--server-pid`, if given.
pub(crate) fn sample_of(pid: Option<u32>) -> anyhow::Result<Option<Sample>> {
    use anyhow::Context;
    pid.map(|pid| sample(pid).with_context(|| format!("reading /proc/{pid}"))).transpose()
}

/// The kernel's UDP counters that tell of datagrams lost in the kernel
/// (this network namespace, every socket: on loopback, the daemon's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct UdpCounters {
    /// Datagrams dropped because a receive buffer was full.
    pub rcvbuf_errors: u64,
    /// Every receive error, those above included.
    pub in_errors: u64,
}

/// Reads the `Udp:` lines of /proc/net/snmp.
pub(crate) fn udp_counters() -> io::Result<UdpCounters> {
    parse_snmp(&fs::read_to_string("/proc/net/snmp")?)
}

fn parse_snmp(text: &str) -> io::Result<UdpCounters> {
    let mut lines = text.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = lines.next().zip(lines.next()).ok_or_else(|| bad("no Udp lines in snmp"))?;
    let field = |name: &str| -> io::Result<u64> {
        names
            .split_whitespace()
            .position(|n| n == name)
            .and_then(|i| values.split_whitespace().nth(i))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad("a Udp counter is missing"))
    };
    Ok(UdpCounters { rcvbuf_errors: field("RcvbufErrors")?, in_errors: field("InErrors")? })
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn samples_this_process() {
        let s = super::sample(std::process::id()).unwrap();
        assert!(s.rss_bytes > 0);
        assert!(s.cpu_s >= 0.0);
    }

    #[test]
    fn reads_the_udp_counters_by_name() {
        let snmp = "Ip: Forwarding\nIp: 1\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors\n\
                    Udp: 589 0 7 591 5\nUdpLite: InDatagrams InErrors\nUdpLite: 0 0\n";
        let c = super::parse_snmp(snmp).unwrap();
        assert_eq!(c, super::UdpCounters { rcvbuf_errors: 5, in_errors: 7 });
        assert!(super::parse_snmp("Udp: InErrors\n").is_err());
        super::udp_counters().unwrap();
    }
}
