//! Transparent huge pages for the big per-pool arrays.
//!
//! A 10M-token slab is 640 MB: with 4 KiB pages every random access is also a
//! TLB miss, and under virtualisation (nested paging) a TLB miss walks two
//! page tables. Backed by 2 MiB pages the same slab needs 320 TLB entries
//! instead of 160,000. Linux only maps huge pages into a region when THP is
//! `always`, or `madvise` and the region was advised; most distributions
//! default to `madvise`, hence the call. Elsewhere, or if the kernel says no,
//! nothing changes but speed.

/// Huge page size on x86-64 and aarch64 (4 KiB base pages).
pub(crate) const HUGE_PAGE: usize = 2 << 20;

/// Advises the kernel to back `[addr, addr + len)` (inside one live
/// allocation, 2 MiB-aligned) with huge pages.
#[cfg(target_os = "linux")]
pub(crate) fn advise_range(addr: usize, len: usize) {
    // SAFETY: madvise with MADV_HUGEPAGE only changes how the kernel backs
    // this range of our own mapping (it is inside a live allocation); it
    // never changes its contents or validity. Failure (EINVAL when THP is
    // compiled out) is harmless and ignored.
    unsafe {
        libc::madvise(addr as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn advise_range(_addr: usize, _len: usize) {}
