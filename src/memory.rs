//! Giving memory back to the operating system.

/// Parsing a big list frees far more than the snapshot keeps; glibc holds
/// on to that memory unless asked, which would count against the RSS budget
/// after every start and every reload.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only returns free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}
