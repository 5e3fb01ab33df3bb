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
