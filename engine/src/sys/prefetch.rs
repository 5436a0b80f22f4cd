//! A hint that this thread is about to write a cache line: x86-64's `PREFETCHW`, which
//! asks for the line in a state the core can write without waiting for it.
//!
//! A producer posting one record per call right behind a consumer that keeps pace with it
//! (see `ring::PREFETCH_AHEAD`) finds every line it writes in the consumer's cache: each
//! store then waits for the line to come back, one line after another, because stores
//! leave the core in order. Asking for lines a few ahead lets those transfers overlap.
//!
//! `PREFETCHW` is there on every AMD64 processor and on Intel's since Broadwell; elsewhere,
//! under Miri and under loom the hint is nothing, and [`available`] says so.

#[cfg(all(target_arch = "x86_64", not(miri), not(loom)))]
mod imp {
    use std::sync::OnceLock;

    /// Whether the processor has `PREFETCHW` (CPUID leaf 0x8000_0001, ECX bit 8), asked
    /// once: in a virtual machine `CPUID` is a trip to the hypervisor.
    pub(crate) fn available() -> bool {
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            use std::arch::x86_64::__cpuid;
            const EXTENDED: u32 = 0x8000_0000;
            const PRFCHW: u32 = 1 << 8;
            __cpuid(EXTENDED).eax > EXTENDED && __cpuid(EXTENDED + 1).ecx & PRFCHW != 0
        })
    }

    /// Asks for the line holding `ptr` ahead of a write. Only for processors where
    /// [`available`] holds.
    #[inline(always)]
    pub(crate) fn for_write<T>(ptr: *const T) {
        // SAFETY: a prefetch reads and writes no memory, changes no register or flag and
        // never faults, whatever the address; `available` made sure the instruction exists.
        unsafe {
            std::arch::asm!(
                "prefetchw [{ptr}]",
                ptr = in(reg) ptr,
                options(nostack, preserves_flags, readonly)
            );
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", not(miri), not(loom))))]
mod imp {
    /// No write prefetch here.
    pub(crate) fn available() -> bool {
        false
    }

    /// Nothing: see [`available`].
    #[inline(always)]
    pub(crate) fn for_write<T>(_ptr: *const T) {}
}

pub(crate) use imp::{available, for_write};

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// The processor's flags as Linux lists them, where it does.
    #[cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]
    fn cpu_flags() -> Option<Vec<String>> {
        let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
        let line = info.lines().find(|line| line.starts_with("flags"))?;
        Some(line.split_whitespace().map(str::to_owned).collect())
    }

    #[test]
    #[cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]
    fn available_agrees_with_the_kernel_on_the_processor() {
        let flags = cpu_flags().expect("/proc/cpuinfo lists the processor's flags");
        // Linux names the CPUID bit after AMD's 3DNow! prefetches.
        assert_eq!(
            available(),
            flags.iter().any(|flag| flag == "3dnowprefetch")
        );
    }

    #[test]
    fn a_write_prefetch_leaves_memory_as_it_was() {
        let line = [7u64; 16];
        if available() {
            for word in &line {
                for_write(word);
            }
            // Past the end too: a prefetch never faults.
            for_write(line.as_ptr().wrapping_add(4096));
        }
        assert_eq!(line, [7; 16]);
    }
}
