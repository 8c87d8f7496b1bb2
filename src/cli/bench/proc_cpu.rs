//! CPU time of a process from `/proc/<pid>/stat` (Linux), for `jetask bench`'s CPU per task:
//! user + system time of the whole thread group, in clock ticks.

use std::sync::OnceLock;

#[derive(Debug, thiserror::Error)]
pub enum ProcCpuError {
    #[error("cannot read /proc/{pid}/stat: {source}")]
    Read { pid: u32, source: std::io::Error },
    #[error("unreadable /proc stat line: {0}")]
    Parse(&'static str),
}

/// utime + stime, in clock ticks, from one `/proc/<pid>/stat` line. The command name (field 2)
/// is in parentheses and may itself hold spaces or parentheses, so the fields are counted from
/// the last `)`: what follows it starts at field 3 (the state), so utime (14) and stime (15)
/// are its 12th and 13th.
pub fn parse_stat(line: &str) -> Result<u64, ProcCpuError> {
    let (_, rest) = line
        .rsplit_once(')')
        .ok_or(ProcCpuError::Parse("no ')' after the command name"))?;
    let mut fields = rest.split_whitespace().skip(11);
    let mut next = |what| {
        fields
            .next()
            .ok_or(ProcCpuError::Parse(what))?
            .parse::<u64>()
            .map_err(|_| ProcCpuError::Parse(what))
    };
    let utime = next("utime is not a number")?;
    let stime = next("stime is not a number")?;
    Ok(utime + stime)
}

/// CPU time used so far by process `pid`, in microseconds.
pub fn cpu_us(pid: u32) -> Result<f64, ProcCpuError> {
    let line =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|source| ProcCpuError::Read { pid, source })?;
    Ok(parse_stat(&line)? as f64 * 1e6 / clk_tck() as f64)
}

/// Clock ticks per second. The crate forbids `unsafe`, so `sysconf(_SC_CLK_TCK)` is asked of
/// `getconf` once; 100 (the value on every common Linux build) when that fails.
fn clk_tck() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// CPU time of a set of processes, summed: `None` when there is none to measure or one cannot
/// be read (a process that exited, or not Linux).
pub fn sum_us(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| cpu_us(*p).ok()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utime_and_stime_are_counted_after_the_command_name() {
        let line = "4242 (jet ask) (x)) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat(line).unwrap(), 325);
        assert!(parse_stat("4242 jetask S 1").is_err());
        assert!(parse_stat("4242 (jetask) S 1 2").is_err());
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_us(std::process::id()).unwrap() > 0.0);
    }
}
