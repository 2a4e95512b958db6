//! Allocator tuning for processes that train or run the prior on the CPU.
//!
//! A training step allocates and frees the same multi-megabyte activation and gradient buffers
//! every step. glibc's malloc serves such sizes with `mmap` and returns them to the kernel on
//! `free`, so every step faulted the pages in again and the kernel cleared them (`clear_page`
//! and page faults were ≈ 10 % of a step in `perf`). [`keep_freed_memory`] keeps them in the
//! heap instead: the step gets faster, the process keeps its peak memory.

/// Keeps freed memory in the process for reuse (glibc only; elsewhere nothing): `malloc` serves
/// blocks up to 32 MiB (glibc's largest mmap threshold on 64-bit) from the heap and never trims
/// it. Call once at the start of a program, before heavy allocation.
#[allow(unsafe_code)]
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's parameters; it takes plain integers, is
    // thread-safe in glibc and has no memory-safety preconditions.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
