//! Process memory from `/proc` (Linux).

/// A size field of `/proc/PID/status` (e.g. `VmRSS:`, `VmHWM:`) in bytes; `pid` may be
/// `self`.
pub(crate) fn status_bytes(pid: &str, field: &str) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("no {field} in /proc/{pid}/status"))
}

/// A process's resident memory in bytes; `pid` may be `self`.
pub(crate) fn rss(pid: &str) -> Result<u64, String> {
    status_bytes(pid, "VmRSS:")
}

/// Resets a process's peak-RSS mark (`VmHWM`) and returns its current RSS.
pub(crate) fn reset_peak(pid: &str) -> Result<u64, String> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .map_err(|e| format!("cannot reset peak RSS: {e}"))?;
    rss(pid)
}

/// CPU seconds (user and system) a process has used so far; `pid` may be `self`.
pub(crate) fn cpu_seconds(pid: &str) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or("a malformed /proc stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).ok_or("a malformed /proc stat");
    // The kernel reports in USER_HZ, 100 per second on Linux.
    Ok((ticks(11)? + ticks(12)?) as f64 / 100.0)
}
