//! Handing memory back to the system when the server falls idle: free heap pages, and the
//! mappings of code and read-only data that start-up or a wave of sessions touched. It owns
//! only these mechanics (when to call them is the caller's policy) and must never discard a
//! page that holds state: only clean, read-only, file-backed pages, which the kernel maps
//! again from the page cache on their next use.
//!
//! Why the file pages matter: an idle server's RSS is mostly code. The kernel maps a 64 KiB
//! window around every code page that faults (fault-around), so start-up (configuration,
//! database integrity check, certificate loading) and one login leave nearly the whole
//! 3.6 MB binary and 1.3 MB of libc mapped, although the idle loop runs a small part of it.
//! Those pages stay in the page cache, shared and clean; unmapping them only stops counting
//! them against the process and lets the kernel reclaim them first.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

/// Returns free heap pages and the mappings of clean read-only file pages to the kernel.
/// Costs a walk over the heap and over `/proc/self/smaps` (about a millisecond), so callers
/// keep it rare; the code dropped here faults back in as it is used (minor faults; I/O only
/// if the kernel has meanwhile reclaimed those pages from the page cache).
pub fn release() {
    unmap_clean_file_pages();
    trim_heap();
}

/// Shrinks a table that a past peak left large: a `HashMap` never gives back its buckets by
/// itself. Only when it is a quarter full, so growing again stays amortised O(1).
pub fn shrink_sparse<K: Eq + Hash, V, S: BuildHasher>(map: &mut HashMap<K, V, S>) {
    if map.capacity() > 64 && map.len() < map.capacity() / 4 {
        map.shrink_to_fit();
    }
}

/// One mapping of `/proc/self/smaps` that may be dropped: private, read-only, of the
/// executable or a shared library (a file that also has an executable mapping, so never a
/// data file someone might unmap meanwhile), and without a single anonymous (written,
/// copy-on-write) page. Relocated data (`.data.rel.ro`) is read-only too but has anonymous
/// pages, so it never qualifies.
#[derive(Debug, PartialEq, Eq)]
struct Droppable {
    start: usize,
    len: usize,
}

/// The droppable mappings listed in `smaps` text.
fn droppable(smaps: &str) -> Vec<Droppable> {
    // Read-only file mappings, with whether their `Anonymous:` line said 0; only the last
    // one's fields are being read.
    let mut candidates: Vec<(Droppable, &str, bool)> = Vec::new();
    let mut code_files = Vec::new();
    let mut reading_candidate = false;
    for line in smaps.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-') {
            // A header: `start-end perms offset dev inode [path]`.
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            let range = usize::from_str_radix(start, 16)
                .ok()
                .zip(usize::from_str_radix(end, 16).ok());
            reading_candidate = false;
            if let (Some((start, end)), "r-xp" | "r--p", true) =
                (range, perms, path.starts_with('/'))
            {
                if perms == "r-xp" {
                    code_files.push(path);
                }
                let len = end.saturating_sub(start);
                candidates.push((Droppable { start, len }, path, false));
                reading_candidate = true;
            }
        } else if first == "Anonymous:" && reading_candidate {
            if let Some((_, _, clean)) = candidates.last_mut() {
                *clean = fields.next() == Some("0");
            }
        }
    }
    candidates
        .into_iter()
        .filter(|(_, path, clean)| *clean && code_files.contains(path))
        .map(|(mapping, _, _)| mapping)
        .collect()
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // madvise on mappings checked above to hold no state
fn unmap_clean_file_pages() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    for mapping in droppable(&smaps) {
        // SAFETY: the range is a whole private read-only mapping of the executable or a
        // shared library with no anonymous page, so every page's content is the file's, and
        // MADV_DONTNEED only unmaps them: the next access maps the same bytes again from the
        // page cache. Nothing can write to it in between (read-only), and nothing unmaps it
        // in between: hearth never unloads a library, so the range cannot be reused.
        unsafe {
            libc::madvise(
                mapping.start as *mut libc::c_void,
                mapping.len,
                libc::MADV_DONTNEED,
            );
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn unmap_clean_file_pages() {}

/// Returns free heap pages to the kernel (glibc's `malloc_trim`; a no-op elsewhere). Cheaper
/// than [`release`] (no `smaps` walk): for after one large session, whose buffers glibc would
/// otherwise keep for reuse, since freeing a large block raises its mmap threshold and later
/// blocks of that size come from the heap, which only shrinks from its top by itself.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // FFI call without arguments to check
pub fn trim_heap() {
    // SAFETY: malloc_trim only inspects and madvises the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim_heap() {}

#[cfg(test)]
mod tests {
    use super::*;

    // 32-bit addresses, so the test builds for armv7 too.
    const SMAPS: &str = "\
55edb000-55f90000 r--p 00000000 fe:00 123 /usr/bin/hearth
Size:                728 kB
Rss:                 512 kB
Anonymous:             0 kB
55f90000-56243000 r-xp 000b5000 fe:00 123 /usr/bin/hearth
Rss:                2684 kB
Anonymous:             0 kB
56243000-56257000 r--p 00368000 fe:00 123 /usr/bin/hearth
Rss:                  80 kB
Anonymous:            76 kB
56257000-56259000 rw-p 0037c000 fe:00 123 /usr/bin/hearth
Anonymous:             8 kB
5765d000-576c1000 rw-p 00000000 00:00 0 [heap]
Anonymous:           260 kB
77e8c000-77e8e000 r-xp 00000000 00:00 0 [vdso]
Anonymous:             0 kB
77e8f000-77eb5000 r-xp 00001000 fe:00 456 /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
Anonymous:             0 kB
77f00000-77f01000 r--p 00000000 fe:00 789 /tmp/no-anonymous-line
";

    #[test]
    fn only_clean_read_only_file_mappings_are_dropped() {
        assert_eq!(
            droppable(SMAPS),
            [
                Droppable {
                    start: 0x55ed_b000,
                    len: 0xb5000
                },
                Droppable {
                    start: 0x55f9_0000,
                    len: 0x2b3000
                },
                Droppable {
                    start: 0x77e8_f000,
                    len: 0x26000
                },
            ]
        );
    }

    /// `RssFile` of this process, in KiB.
    fn rss_file() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("RssFile:"))
            .and_then(|kib| kib.trim().trim_end_matches(" kB").parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn release_unmaps_this_process_code_and_it_runs_on() {
        // Under qemu-user (CI sets HEARTH_TEST_RUNNER for the ARM runs) smaps is the
        // emulator's rendering, madvise on file mappings a no-op and RssFile the
        // emulator's own: there only running on after a release is checked.
        let native = std::env::var_os("HEARTH_TEST_RUNNER").is_none();
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
        assert!(!native || !droppable(&smaps).is_empty(), "{smaps}");
        let before = rss_file();
        release();
        // This very function's code was among the pages dropped: it faulted back in.
        let after = rss_file();
        assert!(!native || after < before, "RssFile {before} → {after} KiB");
    }

    #[test]
    fn shrinks_only_when_a_quarter_full() {
        let mut map: HashMap<u32, u32> = (0..1000).map(|i| (i, i)).collect();
        map.retain(|&k, _| k < 500);
        let before = map.capacity();
        shrink_sparse(&mut map);
        assert_eq!(map.capacity(), before, "over a quarter full: kept");
        map.retain(|&k, _| k < 10);
        shrink_sparse(&mut map);
        assert!(map.capacity() < 64, "{}", map.capacity());
        assert_eq!(map.len(), 10);
    }
}
