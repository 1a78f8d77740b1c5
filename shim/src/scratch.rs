//! A scratch region for the CLI's argument parsing, dropped from the
//! supervisor it forks.
//!
//! `nomad-shim run`/`start` fork the supervisor from the CLI's own process
//! (cli/launch.rs) instead of exec'ing a second copy: a copy-on-write clone
//! of everything the CLI dirtied. Parsing the command line with clap builds
//! the whole command tree and frees it again, and what it frees stays
//! behind as dirty heap pages (glibc's tcache keeps freed chunks;
//! `malloc_trim` returns only whole free pages, and the parsed options are
//! scattered between them): measured on the static release binary, an idle
//! supervisor forked by the CLI kept 76-80 KiB of heap against 20-24 KiB for
//! one the library exec'd, 188 against 120 KiB private dirty in all.
//!
//! So from the start of the CLI's argument parsing up to the fork of
//! `run`/`start` (the spec built, checked and written to `spec.json`),
//! every allocation comes from a region of its own (an anonymous mapping,
//! bump-allocated; frees there do nothing), and the forked supervisor
//! drops that region's pages (`MADV_DONTNEED`) first thing: it reads
//! none of it (it reads the spec from disk). The
//! CLI itself keeps using what is there. Other commands leave the region
//! right after the parse. Outside it, and once it is full, allocations go
//! to the system allocator as always.
//!
//! The one rule this needs: nothing process-wide (a `static` cache, a lazy
//! handle) may be filled while the region is active, or the supervisor
//! would find a pointer into dropped pages. std's handle of the main thread
//! and the library's cached boot id are filled before (cli/mod.rs);
//! tests/perf.rs checks the boot id the supervisor records.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Address space reserved for the parse (only the pages it touches are
/// memory; clap's parse of the longest `run` line touches well under this).
const SIZE: usize = 2 << 20;

/// The allocator of the `nomad-shim` binary: the system allocator, except
/// during [`parse_in_scratch`].
pub struct ShimAlloc;

/// Whether allocations go to the region now.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The region: `[START, START + SIZE)`, 0 while none is mapped.
static START: AtomicUsize = AtomicUsize::new(0);
/// The next free byte of the region.
static NEXT: AtomicUsize = AtomicUsize::new(0);

fn in_region(p: *mut u8) -> bool {
    let start = START.load(Ordering::Relaxed);
    let p = p as usize;
    start != 0 && p >= start && p < start + SIZE
}

/// Bump allocation from the region, or null when it is inactive or full.
/// The CLI is single-threaded while the region is active; the compare-and-
/// swap only keeps two threads (a test harness's) from sharing a range.
fn bump(layout: Layout) -> *mut u8 {
    if !ACTIVE.load(Ordering::Relaxed) {
        return std::ptr::null_mut();
    }
    let end_of_region = START.load(Ordering::Relaxed) + SIZE;
    let mut at = 0;
    let claimed = NEXT.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |next| {
        at = next.next_multiple_of(layout.align());
        at.checked_add(layout.size())
            .filter(|&end| end <= end_of_region)
    });
    match claimed {
        Ok(_) => at as *mut u8,
        Err(_) => std::ptr::null_mut(),
    }
}

// SAFETY: every pointer handed out is either the system allocator's (and
// goes back to it) or a fresh, suitably aligned, never reused range of the
// region, which is mapped for the rest of the process's life (only its
// pages are dropped, in a forked child that no longer uses them).
unsafe impl GlobalAlloc for ShimAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = bump(layout);
        if !p.is_null() {
            return p;
        }
        // SAFETY: the caller's contract (non-zero size) is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // The region's fresh pages are zero, and no byte of it is handed
        // out twice.
        let p = bump(layout);
        if !p.is_null() {
            return p;
        }
        // SAFETY: as in alloc.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if in_region(ptr) {
            return;
        }
        // SAFETY: not in the region, so it came from System with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !in_region(ptr) {
            // SAFETY: not in the region, so it came from System with `layout`.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        // SAFETY: new_size is non-zero (realloc's contract).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both ranges are valid for the smaller size and do
            // not overlap (`new` is a fresh allocation).
            unsafe { std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
        }
        new
    }
}

/// From now on, allocations come from the region (mapped on first use; if
/// it cannot be mapped, they stay with the system allocator). Only for the
/// CLI's main thread, before it makes any other thread; [`end`] it before
/// anything that runs for long (following a task's output), since the
/// region never reuses what is freed.
pub fn begin() {
    if START.load(Ordering::Relaxed) == 0 {
        // SAFETY: a fresh private anonymous mapping; no existing memory is
        // touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return;
        }
        START.store(p as usize, Ordering::Relaxed);
        NEXT.store(p as usize, Ordering::Relaxed);
    }
    ACTIVE.store(true, Ordering::Relaxed);
}

/// Allocations go to the system allocator again; what the region holds
/// stays valid in this process.
pub fn end() {
    ACTIVE.store(false, Ordering::Relaxed);
}

/// Runs `f` with its allocations in the region ([`begin`], [`end`]).
#[cfg(test)]
fn in_scratch<T>(f: impl FnOnce() -> T) -> T {
    begin();
    let out = f();
    end();
    out
}

/// In a forked child that will never touch what was parsed (the supervisor
/// forked by the CLI): drops the region's pages (`MADV_DONTNEED`), so they
/// are not this process's memory any more.
pub fn drop_in_child() {
    let start = START.load(Ordering::Relaxed);
    if start == 0 {
        return;
    }
    // SAFETY: the range is the region mapped above; this process reads
    // none of it afterwards (the caller's promise), later frees of its
    // pointers are no-ops, and pages would read back as zeros, not fault.
    unsafe {
        libc::madvise(start as *mut libc::c_void, SIZE, libc::MADV_DONTNEED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parse_allocates_in_the_region_and_its_results_outlive_it() {
        let (inside, text) = in_scratch(|| {
            let mut v: Vec<String> = (0..100).map(|i| format!("arg-{i}")).collect();
            v.shrink_to_fit();
            (in_region(v.as_ptr() as *mut u8), v.join(" "))
        });
        assert!(inside, "allocations during the parse come from the region");
        assert!(in_region(text.as_ptr() as *mut u8));
        // Regrown outside the parse: copied out to the system allocator,
        // contents intact.
        let mut grown = text;
        grown.push_str(&"x".repeat(10_000));
        assert!(grown.starts_with("arg-0 arg-1 "));
        assert!(!in_region(grown.as_ptr() as *mut u8));
        let after = String::from("after the parse");
        assert!(!in_region(after.as_ptr() as *mut u8));
    }
}
