//! The CPUID table a Linux guest sees (the kernel answers CPUID exits from
//! it without leaving ring 0; see `abi::VcpuRun::cpuid`).
//!
//! The host's leaves, minus what this VMM does not virtualize: no VMX/SVM
//! (no nesting), no XSAVE/AVX (the kernel keeps only an FXSAVE image of the
//! guest and accepts XCR0 = x87 only), no MONITOR/MWAIT, no performance
//! counters or debug store, no machine-check architecture (its MSRs are not
//! emulated), no MTRRs (guests then use PAT alone), no TSC_ADJUST. Added:
//! the hypervisor bit, x2APIC and TSC-deadline (the kernel's APIC has
//! both), the initial APIC ID of each vCPU and a flat topology, and the
//! hypervisor leaves: KVM's signature and, of its paravirtual features,
//! only the clock (see [`super::pvclock`]) at 0x4000_0000/1, and the TSC
//! frequency in kHz at 0x4000_0010 (the kernel fills it).

use abi::CpuidEntry;
use alloc::vec::Vec;

/// Any sub-leaf (`CpuidEntry::subleaf`).
const ANY: u32 = u32::MAX;
pub const HYPERVISOR_BASE: u32 = 0x4000_0000;
pub const KVM_FEATURES_LEAF: u32 = 0x4000_0001;
pub const HYPERVISOR_TSC_LEAF: u32 = 0x4000_0010;
/// KVM's signature: Linux then uses the KVM paravirtual features offered
/// at 0x4000_0001 (only the clock) and nothing else of KVM's.
pub const SIGNATURE: &[u8; 12] = b"KVMKVMKVM\0\0\0";

// Leaf 1 ECX / EDX bits.
const ECX_MONITOR: u32 = 1 << 3;
const ECX_DS_CPL: u32 = 1 << 4;
const ECX_VMX: u32 = 1 << 5;
const ECX_SMX: u32 = 1 << 6;
const ECX_EST: u32 = 1 << 7;
const ECX_TM2: u32 = 1 << 8;
const ECX_PDCM: u32 = 1 << 15;
const ECX_X2APIC: u32 = 1 << 21;
const ECX_TSC_DEADLINE: u32 = 1 << 24;
const ECX_XSAVE: u32 = 1 << 26;
const ECX_OSXSAVE: u32 = 1 << 27;
const ECX_AVX: u32 = 1 << 28;
const ECX_F16C: u32 = 1 << 29;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_MCE: u32 = 1 << 7;
const EDX_MTRR: u32 = 1 << 12;
const EDX_MCA: u32 = 1 << 14;
const EDX_DS: u32 = 1 << 21;
const EDX_ACPI: u32 = 1 << 22;
const EDX_TM: u32 = 1 << 29;
const EDX_PBE: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;

/// The CPU this runs on, as `[eax, ebx, ecx, edx]` of `leaf`/`subleaf`
/// (what [`guest_cpuid`] starts from). CPUID is unprivileged and only reads.
pub fn host(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// AMD's extended topology leaf (APM Vol. 3 §E.4.24).
pub const TOPOLOGY_EXT_LEAF: u32 = 0x8000_001e;

/// The table for vCPU `apic_id` of `vcpus`, from the host's CPUID
/// (`host(leaf, subleaf) -> [eax, ebx, ecx, edx]`). At most `max` entries.
pub fn guest_cpuid(host: impl Fn(u32, u32) -> [u32; 4], apic_id: u32, vcpus: u32, max: usize) -> Vec<CpuidEntry> {
    let mut out = Vec::new();
    let mut add = |leaf: u32, subleaf: u32, r: [u32; 4]| {
        if out.len() < max {
            out.push(CpuidEntry { leaf, subleaf, eax: r[0], ebx: r[1], ecx: r[2], edx: r[3] });
        }
    };
    // Basic leaves up to 7; 4, 0xB and 0xD (cache/topology/XSAVE detail)
    // are left out, so they read as zero.
    let max_basic = host(0, 0)[0].min(7);
    for leaf in 0..=max_basic {
        let mut r = host(leaf, 0);
        match leaf {
            0 => r[0] = max_basic,
            1 => {
                r[1] = (r[1] & 0x0000_ffff) | ((vcpus.min(255)) << 16) | (apic_id << 24);
                r[2] &= !(ECX_MONITOR | ECX_DS_CPL | ECX_VMX | ECX_SMX | ECX_EST | ECX_TM2 | ECX_PDCM);
                r[2] &= !(ECX_XSAVE | ECX_OSXSAVE | ECX_AVX | ECX_F16C);
                r[2] |= ECX_X2APIC | ECX_TSC_DEADLINE | ECX_HYPERVISOR;
                r[3] &= !(EDX_MCE | EDX_MTRR | EDX_MCA | EDX_DS | EDX_ACPI | EDX_TM | EDX_PBE);
                r[3] |= EDX_HTT;
            }
            // Cache parameters (its core counts would contradict ours).
            4 => continue,
            // MONITOR/MWAIT, thermal/power: none.
            5 | 6 => r = [0; 4],
            7 => {
                // Sub-leaf 0 only. Keep the integer and security extensions a
                // guest uses without state of its own (FSGSBASE, BMI1/2, SMEP,
                // ERMS, RDSEED, ADX, SMAP, CLFLUSHOPT, CLWB, SHA); drop what
                // needs XSAVE state (AVX2, AVX-512, MPX, PKU), TSC_ADJUST (an
                // MSR), INVPCID and RDT.
                r[0] = 0;
                const EBX_KEEP: u32 = (1 << 0) | (1 << 3) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 18) | (1 << 19)
                    | (1 << 20) | (1 << 23) | (1 << 24) | (1 << 29);
                r[1] &= EBX_KEEP;
                r[2] &= (1 << 22) | (1 << 2); // RDPID, UMIP
                r[3] = 0;
                add(7, 0, r);
                continue;
            }
            _ => {}
        }
        add(leaf, ANY, r);
    }
    let host_max_ext = host(0x8000_0000, 0)[0];
    // Up to 0x8000_0008, and 0x8000_001E (AMD's core topology) where the
    // host has it: without it a guest on an AMD family 17h+ CPU reads the
    // HTT flag as SMT and counts our vCPUs as threads of one core
    // (memtest86+ showed "1 Cores 2 Threads"). 0x8000_0009..0x8000_001D
    // (SVM, IBS, cache topology…) are left out and read as zero.
    let max_ext = if host_max_ext >= TOPOLOGY_EXT_LEAF { TOPOLOGY_EXT_LEAF } else { host_max_ext.min(0x8000_0008) };
    for leaf in (0x8000_0000..=max_ext.min(0x8000_0008)).chain((max_ext == TOPOLOGY_EXT_LEAF).then_some(TOPOLOGY_EXT_LEAF)) {
        let mut r = host(leaf, 0);
        match leaf {
            0x8000_0000 => r[0] = max_ext,
            0x8000_0001 => {
                // Keep LAHF, ABM/LZCNT, SSE4A, misaligned SSE, 3DNow!prefetch,
                // CR8 legacy; drop SVM (2), ExtApicSpace (3), OSVW (9), IBS
                // (10), XOP/FMA4/TBM, SKINIT (12), WDT (13), TopoExt (22),
                // perf counters (23, 24, 28), MWAITX (29).
                r[2] &= (1 << 0) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8);
            }
            // Power management: keep only the invariant TSC.
            0x8000_0007 => r = [0, 0, 0, r[3] & (1 << 8)],
            0x8000_0008 => {
                // Address sizes; no core-count or extended features.
                r = [r[0] & 0xffff, 0, (vcpus.saturating_sub(1)) & 0xff, 0];
            }
            // Extended APIC ID; compute unit = the vCPU, one thread each
            // (EBX[15:8] = threads per unit - 1); one node.
            TOPOLOGY_EXT_LEAF => r = [apic_id, apic_id & 0xff, 0, 0],
            _ => {}
        }
        add(leaf, ANY, r);
    }
    let sig = |i: usize| u32::from_le_bytes([SIGNATURE[i], SIGNATURE[i + 1], SIGNATURE[i + 2], SIGNATURE[i + 3]]);
    add(HYPERVISOR_BASE, ANY, [KVM_FEATURES_LEAF, sig(0), sig(4), sig(8)]);
    let features = super::pvclock::KVM_FEATURE_CLOCKSOURCE2 | super::pvclock::KVM_FEATURE_CLOCKSOURCE_STABLE_BIT;
    add(KVM_FEATURES_LEAF, ANY, [features, 0, 0, 0]);
    add(HYPERVISOR_TSC_LEAF, ANY, [0; 4]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(leaf: u32, _sub: u32) -> [u32; 4] {
        match leaf {
            0 => [0xd, 0x6874_7541, 0x444d_4163, 0x6974_6e65],
            1 => [0x00a0_0f11, 0x0001_0800, 0xfef8_3203 | ECX_VMX | ECX_XSAVE, 0x178b_fbff],
            0x8000_0000 => [0x8000_001f, 0, 0, 0],
            0x8000_0001 => [0, 0, 0x75c2_37ff, 0x2fd3_fbff],
            0x8000_0008 => [0x3030, 0x1234, 0x3f, 0],
            _ => [leaf, 1, 2, 3],
        }
    }

    fn find(t: &[CpuidEntry], leaf: u32) -> CpuidEntry {
        *t.iter().find(|e| e.leaf == leaf).unwrap()
    }

    #[test]
    fn hides_nesting_xsave_and_msr_features_and_sets_topology() {
        let t = guest_cpuid(host, 1, 2, 64);
        let l1 = find(&t, 1);
        assert_eq!(l1.ecx & (ECX_VMX | ECX_XSAVE | ECX_OSXSAVE | ECX_AVX), 0);
        assert_ne!(l1.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(l1.ecx & ECX_X2APIC, 0);
        assert_eq!(l1.edx & (EDX_MTRR | EDX_MCE | EDX_MCA), 0);
        assert_eq!(l1.ebx >> 24, 1, "initial APIC ID");
        assert_eq!((l1.ebx >> 16) & 0xff, 2, "logical processors");
        assert_eq!(find(&t, 0).eax, 7);
        assert!(t.iter().all(|e| e.leaf != 0xd && e.leaf != 4), "no XSAVE or cache leaves");
        assert_eq!(find(&t, 0x8000_0001).ecx & (1 << 2), 0, "no SVM");
        assert_eq!(find(&t, 0x8000_0000).eax, TOPOLOGY_EXT_LEAF);
        assert_eq!(find(&t, 0x8000_0008).ecx, 1);
        assert!(t.iter().all(|e| !(0x8000_0009..TOPOLOGY_EXT_LEAF).contains(&e.leaf)), "no SVM or IBS leaves");
        let h = find(&t, HYPERVISOR_BASE);
        assert_eq!(h.eax, KVM_FEATURES_LEAF);
        assert_eq!(find(&t, KVM_FEATURES_LEAF).eax, (1 << 3) | (1 << 24), "the clock only");
        let mut sig = Vec::new();
        for r in [h.ebx, h.ecx, h.edx] {
            sig.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&sig, SIGNATURE);
    }

    /// How memtest86+ counts AMD cores (system/cpuid.c): threads from
    /// 0x8000_0008 ECX, two threads per core when 0x8000_001E says so (or,
    /// without that leaf, on family 17h+ with HTT).
    fn amd_cores_as_memtest_counts(t: &[CpuidEntry]) -> (u32, u32) {
        let get = |leaf| t.iter().find(|e| e.leaf == leaf).copied();
        let threads = (get(0x8000_0008).unwrap().ecx & 0xff) + 1;
        let l1 = get(1).unwrap();
        let ext_family = (l1.eax >> 20) & 0xff;
        let per_core = match get(0x8000_0000).map(|e| e.eax) {
            Some(m) if m >= TOPOLOGY_EXT_LEAF => 1 + u32::from((get(TOPOLOGY_EXT_LEAF).unwrap().ebx >> 8) & 3 > 0),
            _ if l1.edx & EDX_HTT != 0 && ext_family >= 8 => 2,
            _ => 1,
        };
        (threads / per_core, threads)
    }

    #[test]
    fn amd_vcpus_are_cores_of_one_thread() {
        // A Zen host (family 17h: extended family 8) with leaf 0x8000_001E.
        let zen = |leaf: u32, sub: u32| match leaf {
            1 => [0x0080_0f12, 0x0001_0800, 0x7ed8_3203, 0x178b_fbff],
            _ => host(leaf, sub),
        };
        for (apic_id, vcpus) in [(0, 2), (1, 2), (3, 4)] {
            let t = guest_cpuid(zen, apic_id, vcpus, 64);
            assert_eq!(amd_cores_as_memtest_counts(&t), (vcpus, vcpus), "{vcpus} vCPUs");
            let e = find(&t, TOPOLOGY_EXT_LEAF);
            assert_eq!((e.eax, e.ebx & 0xff, (e.ebx >> 8) & 0xff), (apic_id, apic_id, 0));
        }
        // A host without the leaf: the table stops at 0x8000_0008.
        let old = |leaf: u32, sub: u32| if leaf == 0x8000_0000 { [0x8000_0008, 0, 0, 0] } else { zen(leaf, sub) };
        let t = guest_cpuid(old, 0, 2, 64);
        assert_eq!(find(&t, 0x8000_0000).eax, 0x8000_0008);
        assert!(t.iter().all(|e| e.leaf != TOPOLOGY_EXT_LEAF));
    }

    #[test]
    fn never_exceeds_the_table() {
        assert_eq!(guest_cpuid(host, 0, 1, 3).len(), 3);
        assert!(guest_cpuid(host, 0, 1, 64).len() <= 64);
    }
}
