//! The component's memory allocator (cargo feature `bump-allocator`, on by
//! default; installed only on `wasm32`).
//!
//! The host gives every call a fresh instance and throws its linear memory
//! away afterwards, so a general-purpose allocator's bookkeeping (free
//! lists, bins, coalescing) is work nobody benefits from. This allocator
//! hands out memory by moving a pointer forward:
//!
//! - it starts at the end of the module's static data (`__heap_base`) and
//!   uses the memory the module already has before asking for more with
//!   `memory.grow`, in whole 64 KiB pages, so a small call never grows
//!   memory at all;
//! - `dealloc` only gives memory back when it is the most recent
//!   allocation, and `realloc` of the most recent allocation grows or
//!   shrinks it in place (a `String` or `Vec` being built is usually the
//!   last thing allocated), so pushing to a collection does not copy it;
//! - a failed `memory.grow` (the call's memory limit) returns null, and
//!   Rust aborts the call as it would with the default allocator.
//!
//! Memory that is freed out of order is not reused until the instance is
//! discarded. That is the right trade for a policy, which runs once per
//! instance, but wrong for a long-lived instance that loops over many
//! requests: such a crate turns the feature off (`default-features =
//! false`) to get Rust's default allocator back, or to install its own
//! `#[global_allocator]` (a program has only one).
//!
//! Measured on the reference policies (fresh instance per call): about a
//! quarter fewer instructions per call than Rust's default allocator
//! (dlmalloc), whose first allocation in every instance also grows memory.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// A wasm page.
pub(crate) const PAGE: usize = 65_536;

/// Where the allocator gets memory: the instance's linear memory, or a
/// buffer in native unit tests.
pub(crate) trait Memory {
    /// The first address the allocator may use.
    fn heap_base(&self) -> usize;
    /// The current end of memory (an address).
    fn end(&self) -> usize;
    /// Grows memory by `pages`; the end before growing, or `None`.
    fn grow(&self, pages: usize) -> Option<usize>;
}

/// The instance's linear memory.
#[cfg(target_arch = "wasm32")]
pub(crate) struct LinearMemory;

#[cfg(target_arch = "wasm32")]
impl Memory for LinearMemory {
    #[inline]
    fn heap_base(&self) -> usize {
        unsafe extern "C" {
            // Defined by wasm-ld: the end of the stack and static data.
            static __heap_base: u8;
        }
        // Only the symbol's address is taken, which needs no `unsafe`.
        ptr::addr_of!(__heap_base) as usize
    }

    #[inline]
    fn end(&self) -> usize {
        core::arch::wasm32::memory_size(0) * PAGE
    }

    #[inline]
    fn grow(&self, pages: usize) -> Option<usize> {
        match core::arch::wasm32::memory_grow(0, pages) {
            usize::MAX => None,
            old => Some(old * PAGE),
        }
    }
}

/// A bump allocator for a single-threaded, short-lived instance.
pub(crate) struct BumpAllocator<M> {
    memory: M,
    /// The next free byte; 0 until the first allocation.
    next: AtomicUsize,
    /// The end of memory as of the last look.
    end: AtomicUsize,
}

impl<M: Memory> BumpAllocator<M> {
    /// An allocator that starts at `memory.heap_base()` on first use.
    pub(crate) const fn new(memory: M) -> Self {
        BumpAllocator {
            memory,
            next: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
        }
    }

    /// The next free byte.
    #[inline]
    fn next(&self) -> usize {
        match self.next.load(Relaxed) {
            0 => {
                self.end.store(self.memory.end(), Relaxed);
                self.memory.heap_base()
            }
            next => next,
        }
    }

    /// Makes `[start, start + size)` usable, growing memory if needed, and
    /// returns where the block really starts (memory grown by someone else
    /// in between is skipped), or `None` when memory cannot grow.
    #[inline]
    fn reserve(&self, mut start: usize, size: usize, align: usize) -> Option<usize> {
        let mut end = self.end.load(Relaxed);
        loop {
            let stop = start.checked_add(size)?;
            if stop <= end {
                return Some(start);
            }
            let pages = (stop - end).div_ceil(PAGE);
            let old_end = self.memory.grow(pages)?;
            if old_end != end {
                // Memory grew behind our back: continue after it.
                start = align_up(old_end, align)?;
            }
            end = old_end + pages * PAGE;
            self.end.store(end, Relaxed);
        }
    }
}

#[inline]
fn align_up(addr: usize, align: usize) -> Option<usize> {
    Some(addr.checked_add(align - 1)? & !(align - 1))
}

// SAFETY: every block handed out is `[start, start + size)` with `start`
// aligned as asked, inside memory (grown first when needed), and not
// overlapping any live block: `next` only moves back over a block that is
// being freed or shrunk and is the most recent one. Instances are
// single-threaded; the atomics are there for `Sync`, not for threads.
unsafe impl<M: Memory> GlobalAlloc for BumpAllocator<M> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let reserved = align_up(self.next(), layout.align())
            .and_then(|start| self.reserve(start, layout.size(), layout.align()));
        match reserved {
            Some(start) => {
                self.next.store(start + layout.size(), Relaxed);
                start as *mut u8
            }
            None => ptr::null_mut(),
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Only the most recent block can be given back.
        if (ptr as usize).wrapping_add(layout.size()) == self.next.load(Relaxed) {
            self.next.store(ptr as usize, Relaxed);
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let start = ptr as usize;
        if start.wrapping_add(layout.size()) != self.next.load(Relaxed) {
            if new_size <= layout.size() {
                return ptr;
            }
            // SAFETY: `GlobalAlloc::realloc`'s contract makes this layout valid.
            let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            // SAFETY: `new_size` is not zero (it is larger than the old size).
            let new = unsafe { self.alloc(new_layout) };
            if !new.is_null() {
                // SAFETY: both blocks are live and do not overlap.
                unsafe { ptr::copy_nonoverlapping(ptr, new, layout.size()) };
            }
            return new;
        }
        // The most recent block: grow or shrink it where it is.
        match self.reserve(start, new_size, layout.align()) {
            Some(new) => {
                self.next.store(new + new_size, Relaxed);
                if new != start {
                    // Memory grew behind our back and the block moved past it.
                    // SAFETY: the new block lies beyond the old one's end.
                    unsafe {
                        ptr::copy_nonoverlapping(ptr, new as *mut u8, layout.size().min(new_size))
                    };
                }
                new as *mut u8
            }
            None => ptr::null_mut(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// `pages` wasm pages of real memory, of which `initial` are "mapped";
    /// the heap starts `base_offset` bytes in.
    struct TestMemory {
        buffer: Vec<u8>,
        base_offset: usize,
        mapped: Cell<usize>,
        limit: usize,
    }

    impl TestMemory {
        fn new(base_offset: usize, initial: usize, limit: usize) -> Self {
            TestMemory {
                buffer: vec![0; (limit + 1) * PAGE],
                base_offset,
                mapped: Cell::new(initial),
                limit,
            }
        }

        /// Page-aligned start of the buffer.
        fn origin(&self) -> usize {
            align_up(self.buffer.as_ptr() as usize, PAGE).unwrap()
        }
    }

    impl Memory for &TestMemory {
        fn heap_base(&self) -> usize {
            self.origin() + self.base_offset
        }
        fn end(&self) -> usize {
            self.origin() + self.mapped.get() * PAGE
        }
        fn grow(&self, pages: usize) -> Option<usize> {
            let old = self.mapped.get();
            if old + pages > self.limit {
                return None;
            }
            self.mapped.set(old + pages);
            Some(self.origin() + old * PAGE)
        }
    }

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn blocks_are_aligned_contiguous_and_start_at_the_heap_base() {
        let memory = TestMemory::new(1000, 1, 4);
        let heap = BumpAllocator::new(&memory);
        unsafe {
            let a = heap.alloc(layout(3, 1)) as usize;
            assert_eq!(a, (&memory).heap_base());
            let b = heap.alloc(layout(8, 8)) as usize;
            assert_eq!(b, align_up(a + 3, 8).unwrap());
            let c = heap.alloc(layout(1, 1)) as usize;
            assert_eq!(c, b + 8);
        }
        assert_eq!(
            memory.mapped.get(),
            1,
            "no growth while the first page lasts"
        );
    }

    #[test]
    fn only_the_most_recent_block_is_given_back() {
        let memory = TestMemory::new(0, 1, 4);
        let heap = BumpAllocator::new(&memory);
        unsafe {
            let a = heap.alloc(layout(16, 8));
            let b = heap.alloc(layout(16, 8));
            heap.dealloc(a, layout(16, 8));
            assert_eq!(heap.alloc(layout(16, 8)) as usize, b as usize + 16);
            let c = heap.alloc(layout(16, 8));
            heap.dealloc(c, layout(16, 8));
            assert_eq!(heap.alloc(layout(16, 8)), c);
        }
    }

    #[test]
    fn the_most_recent_block_grows_and_shrinks_in_place() {
        let memory = TestMemory::new(0, 1, 4);
        let heap = BumpAllocator::new(&memory);
        unsafe {
            let a = heap.alloc(layout(4, 1));
            a.copy_from(b"abcd".as_ptr(), 4);
            let grown = heap.realloc(a, layout(4, 1), 100);
            assert_eq!(grown, a);
            assert_eq!(std::slice::from_raw_parts(grown, 4), b"abcd");
            let shrunk = heap.realloc(grown, layout(100, 1), 2);
            assert_eq!(shrunk, a);
            assert_eq!(heap.alloc(layout(1, 1)) as usize, a as usize + 2);
        }
    }

    #[test]
    fn an_older_block_is_copied_when_it_grows() {
        let memory = TestMemory::new(0, 1, 4);
        let heap = BumpAllocator::new(&memory);
        unsafe {
            let a = heap.alloc(layout(4, 4));
            a.copy_from(b"wxyz".as_ptr(), 4);
            let b = heap.alloc(layout(4, 4));
            let moved = heap.realloc(a, layout(4, 4), 8);
            assert_eq!(moved as usize, b as usize + 4);
            assert_eq!(std::slice::from_raw_parts(moved, 4), b"wxyz");
            // Shrinking an older block keeps it where it is.
            assert_eq!(heap.realloc(b, layout(4, 4), 2), b);
        }
    }

    #[test]
    fn memory_grows_by_whole_pages_until_the_limit_then_allocation_fails() {
        let memory = TestMemory::new(PAGE - 16, 1, 3);
        let heap = BumpAllocator::new(&memory);
        unsafe {
            let a = heap.alloc(layout(PAGE, 1));
            assert!(!a.is_null());
            assert_eq!(memory.mapped.get(), 2);
            // The last block grows in place across a page boundary.
            assert_eq!(heap.realloc(a, layout(PAGE, 1), PAGE + 100), a);
            assert_eq!(memory.mapped.get(), 3);
            assert!(heap.alloc(layout(PAGE, 1)).is_null());
            assert!(heap.realloc(a, layout(PAGE + 100, 1), 4 * PAGE).is_null());
            // A failure leaves the allocator usable.
            assert!(!heap.alloc(layout(8, 8)).is_null());
        }
    }

    #[test]
    fn memory_grown_by_someone_else_is_skipped() {
        let memory = TestMemory::new(0, 1, 8);
        let heap = BumpAllocator::new(&memory);
        unsafe {
            let a = heap.alloc(layout(PAGE - 8, 1));
            // Someone else takes the second page.
            assert_eq!((&memory).grow(1), Some(memory.origin() + PAGE));
            let b = heap.alloc(layout(16, 8));
            assert_eq!(b as usize, memory.origin() + 2 * PAGE);
            let grown = heap.realloc(a, layout(PAGE - 8, 1), PAGE);
            assert!(
                grown as usize >= b as usize + 16,
                "moved past the foreign page"
            );
        }
    }
}
