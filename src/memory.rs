//! Giving memory back to the operating system.

/// Parsing a big list frees far more than the snapshot keeps; glibc holds
/// on to that memory unless asked, which would count against the RSS budget
/// after every start and every reload.
pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only returns free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Keep big allocations out of malloc's heaps. glibc raises its mmap
/// threshold (up to 32 MB) each time a large mapped block is freed, after
/// which the multi-megabyte buffers of a reload (line hashes, the merged
/// rule table) land in a thread's heap and stay resident after they are
/// freed: RSS then grows by the size of a reload's buffers and stays there.
/// A fixed threshold keeps every block of 256 KB or more in its own
/// mapping, returned to the system when freed.
pub(crate) fn keep_large_allocations_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
    }
}
