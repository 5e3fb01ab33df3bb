//! How `zs` keeps glibc's allocator from holding memory it no longer uses.
//!
//! glibc keeps what a program frees for later use, and rarely gives it back when it lies
//! below chunks still in use: after a few 1 GiB transfers a server at rest held 0.3–1.2 GB
//! that heaptrack showed was free, and in a client process every 1 GiB download after the
//! first took 2.5 times the CPU (5–7 s instead of 2.3–2.9 s, `zs bench files`) until that
//! memory was handed back. Two measures: fewer arenas, and a thread that hands free memory
//! back once there is enough of it.

/// Free bytes held by the allocator past which they are handed back to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_ABOVE: usize = 32 << 20;
/// How often the trimmer looks.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Limits glibc to two arenas: each thread that allocates gets its own arena (up to 8 per
/// core), and memory freed by another thread goes back to the arena it came from, so file
/// and hashing buffers made on tokio's blocking threads and freed on its workers stayed in
/// up to 16 arenas. Two arenas measured +49 MB for 1,000 downloads at once against +428 MB
/// with glibc's default. Call before any thread starts.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Starts a thread that, once a second, hands the allocator's free memory back to the
/// system when it holds more than 32 MiB of it (a trim took 0.1–18 ms on a busy 1 GiB
/// heap, so it is not done more often). Asking how much is free walks the allocator's free
/// lists, which grow with a heap of many small blocks (tens of thousands of idle
/// connections: 12% of the machine's CPU went to it in 120 processes during `zs bench idle`
/// with a million connections): the thread waits a thousand times as long as a look took,
/// so it never costs more than a thousandth of a core.
pub fn spawn_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let spawned = std::thread::Builder::new().name("zs-trim".into()).spawn(|| {
            let mut wait = TRIM_EVERY;
            loop {
                std::thread::sleep(wait);
                let looked = std::time::Instant::now();
                // SAFETY: both only read or tidy the allocator's own state, behind its locks.
                unsafe {
                    if libc::mallinfo2().fordblks > TRIM_ABOVE {
                        libc::malloc_trim(0);
                    }
                }
                wait = TRIM_EVERY.max(looked.elapsed() * 1000);
            }
        });
        if let Err(e) = spawned {
            tracing::warn!("no allocator trimmer: {e}");
        }
    }
}
