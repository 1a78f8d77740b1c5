//! The cgroup v2 device filter: a `BPF_PROG_TYPE_CGROUP_DEVICE` program built
//! from a [`DeviceRule`] list, instruction by instruction (no compiler, no
//! BPF library at run time), loaded with `bpf(BPF_PROG_LOAD)` and attached
//! to the task's cgroup with `bpf(BPF_PROG_ATTACH, BPF_CGROUP_DEVICE)`.
//!
//! The kernel runs the program on every `mknod(2)` and `open(2)` of a device
//! node by a process of the cgroup (or a descendant) with a
//! `struct bpf_cgroup_dev_ctx` (linux/bpf.h):
//!
//! ```text
//! offset 0  u32 access_type   (BPF_DEVCG_ACC_* << 16) | BPF_DEVCG_DEV_*
//! offset 4  u32 major
//! offset 8  u32 minor
//! ```
//!
//! and allows the access when it returns 1, refuses it with `EPERM` when it
//! returns 0. The layout of the program is runc's
//! (libcontainer/cgroups/devices/devicefilter.go) and youki's:
//!
//! ```text
//! prelude:   r2 = ctx->access_type & 0xffff     device type (1 block, 2 char)
//!            r3 = ctx->access_type >> 16        access asked (1 mknod, 2 read, 4 write)
//!            r4 = ctx->major; r5 = ctx->minor
//! per rule, the LAST rule first (a later rule overrides an earlier one):
//!            if r2 != type  goto next           (omitted for "all" devices)
//!            r1 = r3 & ~access; if r1 != 0 goto next   (allow: every bit asked is covered)
//!            r1 = r3 &  access; if r1 == 0 goto next   (deny: any bit asked is covered)
//!            if r4 != major goto next           (omitted for *)
//!            if r5 != minor goto next           (omitted for *)
//!            r0 = allow; exit
//! next: ...
//! end:       r0 = 0; exit                        (nothing matched: deny)
//! ```
//!
//! A rule that matches everything (the leading "deny all") ends the program:
//! the verifier refuses unreachable instructions, so nothing follows it.

use std::path::Path;

use super::devices::{Access, DeviceKind, DeviceRule};
use super::error::{Error, Result};
use super::files;

/// One eBPF instruction (`struct bpf_insn`, linux/bpf.h): opcode, the
/// destination register in the low nibble and the source register in the
/// high nibble of one byte (little-endian bitfields), a signed 16-bit
/// offset and a signed 32-bit immediate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    dst: u8,
    src: u8,
    off: i16,
    imm: i32,
}

// Opcode parts (Documentation/bpf/standardization/instruction-set.rst).
const BPF_LDX: u8 = 0x01;
const BPF_ALU: u8 = 0x04;
const BPF_JMP: u8 = 0x05;
const BPF_ALU64: u8 = 0x07;
const BPF_W: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
const BPF_K: u8 = 0x00;
const BPF_X: u8 = 0x08;
const BPF_AND: u8 = 0x50;
const BPF_RSH: u8 = 0x70;
const BPF_MOV: u8 = 0xb0;
const BPF_JEQ: u8 = 0x10;
const BPF_JNE: u8 = 0x50;
const BPF_EXIT: u8 = 0x90;

// struct bpf_cgroup_dev_ctx offsets and BPF_DEVCG_DEV_* (linux/bpf.h).
const CTX_ACCESS_TYPE: i16 = 0;
const CTX_MAJOR: i16 = 4;
const CTX_MINOR: i16 = 8;
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

// Registers: r0 return value, r1 context pointer on entry (then scratch),
// r2-r5 the decoded context.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;

impl Insn {
    /// `dst = *(u32 *)(src + off)`.
    fn load_u32(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(BPF_LDX | BPF_MEM | BPF_W, dst, src, off, 0)
    }
    /// `dst = (u32)dst & imm` (32-bit ALU: the upper half is zeroed).
    fn and32(dst: u8, imm: i32) -> Insn {
        Insn::new(BPF_ALU | BPF_AND | BPF_K, dst, 0, 0, imm)
    }
    /// `dst = (u32)dst >> imm`.
    fn rsh32(dst: u8, imm: i32) -> Insn {
        Insn::new(BPF_ALU | BPF_RSH | BPF_K, dst, 0, 0, imm)
    }
    /// `dst = (u32)src`.
    fn mov32_reg(dst: u8, src: u8) -> Insn {
        Insn::new(BPF_ALU | BPF_MOV | BPF_X, dst, src, 0, 0)
    }
    /// `dst = imm` (64-bit).
    fn mov64(dst: u8, imm: i32) -> Insn {
        Insn::new(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm)
    }
    /// `if dst != imm goto pc + 1 + off`.
    fn jne(dst: u8, imm: i32, off: i16) -> Insn {
        Insn::new(BPF_JMP | BPF_JNE | BPF_K, dst, 0, off, imm)
    }
    /// `if dst == imm goto pc + 1 + off`.
    fn jeq(dst: u8, imm: i32, off: i16) -> Insn {
        Insn::new(BPF_JMP | BPF_JEQ | BPF_K, dst, 0, off, imm)
    }
    /// `return r0`.
    fn exit() -> Insn {
        Insn::new(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
    }

    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            dst,
            src,
            off,
            imm,
        }
    }

    /// The 8 bytes the kernel reads (x86-64 and arm64: little-endian, so the
    /// `dst_reg:4` bitfield is the low nibble).
    pub fn to_bytes(self) -> [u8; 8] {
        let [o0, o1] = self.off.to_le_bytes();
        let [i0, i1, i2, i3] = self.imm.to_le_bytes();
        [
            self.code,
            (self.src << 4) | self.dst,
            o0,
            o1,
            i0,
            i1,
            i2,
            i3,
        ]
    }
}

/// A device program: its instructions, ready for `attach_device_program`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program(Vec<Insn>);

impl Program {
    /// The instructions.
    pub fn insns(&self) -> &[Insn] {
        &self.0
    }

    /// The instructions as the kernel reads them, 8 bytes each.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|i| i.to_bytes()).collect()
    }
}

/// Build the device program for `rules` (module docs). A major or minor
/// above `i32::MAX` (impossible for a real device: the kernel's are 12 and
/// 20 bits) is [`Error::InvalidDeviceRules`].
pub fn device_program(rules: &[DeviceRule]) -> Result<Program> {
    let mut p = vec![
        Insn::load_u32(R2, R1, CTX_ACCESS_TYPE),
        Insn::and32(R2, 0xffff),
        Insn::load_u32(R3, R1, CTX_ACCESS_TYPE),
        Insn::rsh32(R3, 16),
        Insn::load_u32(R4, R1, CTX_MAJOR),
        Insn::load_u32(R5, R1, CTX_MINOR),
    ];
    for rule in rules.iter().rev() {
        p.extend(rule_block(rule)?);
        if rule.is_everything() {
            // Matches everything: nothing after it could ever run.
            return Ok(Program(p));
        }
    }
    p.push(Insn::mov64(R0, 0));
    p.push(Insn::exit());
    Ok(Program(p))
}

/// The instructions of one rule: checks that jump past the block when the
/// access does not match, then `r0 = allow; exit`.
fn rule_block(rule: &DeviceRule) -> Result<Vec<Insn>> {
    let number = |n: u32| {
        i32::try_from(n).map_err(|_| Error::InvalidDeviceRules {
            reason: "a major or minor number above 2^31-1",
        })
    };
    // Checks as (instruction, with its jump offset to fill in).
    let mut checks: Vec<Insn> = Vec::new();
    match rule.kind {
        DeviceKind::All => {}
        DeviceKind::Char => checks.push(Insn::jne(R2, DEV_CHAR, 0)),
        DeviceKind::Block => checks.push(Insn::jne(R2, DEV_BLOCK, 0)),
    }
    if rule.access != Access::ALL {
        let bits = i32::from(rule.access.bits());
        checks.push(Insn::mov32_reg(R1, R3));
        if rule.allow {
            // Skip unless every bit asked for is in the rule.
            checks.push(Insn::and32(R1, !bits & i32::from(Access::ALL.bits())));
            checks.push(Insn::jne(R1, 0, 0));
        } else {
            // Skip unless some bit asked for is in the rule.
            checks.push(Insn::and32(R1, bits));
            checks.push(Insn::jeq(R1, 0, 0));
        }
    }
    if let Some(major) = rule.major {
        checks.push(Insn::jne(R4, number(major)?, 0));
    }
    if let Some(minor) = rule.minor {
        checks.push(Insn::jne(R5, number(minor)?, 0));
    }
    // Each jump goes to the first instruction after the block: past the
    // remaining checks and the two instructions of the verdict.
    let n = checks.len();
    for (i, insn) in checks.iter_mut().enumerate() {
        if insn.code & 0x07 == BPF_JMP {
            insn.off = (n - i - 1 + 2) as i16;
        }
    }
    checks.push(Insn::mov64(R0, i32::from(rule.allow)));
    checks.push(Insn::exit());
    Ok(checks)
}

/// Load `program` (`BPF_PROG_LOAD`, type `BPF_PROG_TYPE_CGROUP_DEVICE`) and
/// attach it to the cgroup directory `dir` (`BPF_PROG_ATTACH`,
/// `BPF_CGROUP_DEVICE`, `BPF_F_ALLOW_MULTI`). The attachment holds the
/// program; our descriptor of it is closed on return, and the kernel frees
/// the program when the cgroup is removed.
///
/// When the verifier refuses the program, the load is retried once with its
/// log, and the log's last line is in the error.
pub fn attach_device_program(dir: &Path, program: &Program) -> Result<()> {
    let bytes = program.to_bytes();
    let prog = match crate::sys::bpf_prog_load_cgroup_device(&bytes, None) {
        Ok(fd) => fd,
        Err(errno) => {
            let mut log = vec![0u8; 64 * 1024];
            // Loaded again only for the verifier's log: the first errno is
            // the error; this result adds nothing (the log buffer does).
            let _ = crate::sys::bpf_prog_load_cgroup_device(&bytes, Some(&mut log));
            let text = String::from_utf8_lossy(&log);
            let last = text
                .trim_end_matches('\0')
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .to_string();
            return Err(Error::BpfLoad {
                path: dir.to_path_buf(),
                cause: errno.into(),
                log: last,
            });
        }
    };
    let cgroup = files::open_dir_path(dir)?;
    crate::sys::bpf_prog_attach_cgroup_device(&cgroup, &prog).map_err(|errno| Error::BpfAttach {
        path: dir.to_path_buf(),
        cause: errno.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::devices::default_rules;

    fn hex(p: &Program) -> Vec<String> {
        p.insns()
            .iter()
            .map(|i| {
                i.to_bytes()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            })
            .collect()
    }

    #[test]
    fn encodes_instructions_like_the_kernel_header() {
        // r2 = *(u32 *)(r1 + 0): BPF_LDX|BPF_MEM|BPF_W = 0x61, dst 2, src 1.
        assert_eq!(
            Insn::load_u32(R2, R1, 0).to_bytes(),
            [0x61, 0x12, 0, 0, 0, 0, 0, 0]
        );
        // if r4 != 136 goto +3
        assert_eq!(
            Insn::jne(R4, 136, 3).to_bytes(),
            [0x55, 0x04, 3, 0, 136, 0, 0, 0]
        );
        // r0 = 1; exit
        assert_eq!(Insn::mov64(R0, 1).to_bytes(), [0xb7, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(Insn::exit().to_bytes(), [0x95, 0, 0, 0, 0, 0, 0, 0]);
        // r1 = (u32)r3
        assert_eq!(
            Insn::mov32_reg(R1, R3).to_bytes(),
            [0xbc, 0x31, 0, 0, 0, 0, 0, 0]
        );
        // r3 >>= 16 (32-bit)
        assert_eq!(
            Insn::rsh32(R3, 16).to_bytes(),
            [0x74, 0x03, 0, 0, 16, 0, 0, 0]
        );
    }

    #[test]
    fn program_for_a_known_list() {
        // deny all; allow c 1:3 rwm; allow b *:* m; deny c 1:3 w
        let rules = [
            DeviceRule::DENY_ALL,
            DeviceRule::allow_char(Some(1), Some(3), Access::ALL),
            DeviceRule {
                kind: DeviceKind::Block,
                ..DeviceRule::allow_char(None, None, Access::MKNOD)
            },
            DeviceRule {
                allow: false,
                ..DeviceRule::allow_char(Some(1), Some(3), Access::WRITE)
            },
        ];
        let p = device_program(&rules).unwrap();
        assert_eq!(
            hex(&p),
            [
                // prelude
                "6112000000000000", // r2 = ctx->access_type
                "54020000ffff0000", // r2 &= 0xffff
                "6113000000000000", // r3 = ctx->access_type
                "7403000010000000", // r3 >>= 16
                "6114040000000000", // r4 = ctx->major
                "6115080000000000", // r5 = ctx->minor
                // deny c 1:3 w (the last rule first)
                "5502070002000000", // if r2 != 2 goto +7
                "bc31000000000000", // r1 = r3
                "5401000004000000", // r1 &= 4
                "1501040000000000", // if r1 == 0 goto +4
                "5504030001000000", // if r4 != 1 goto +3
                "5505020003000000", // if r5 != 3 goto +2
                "b700000000000000", // r0 = 0
                "9500000000000000", // exit
                // allow b *:* m
                "5502050001000000", // if r2 != 1 goto +5
                "bc31000000000000", // r1 = r3
                "5401000006000000", // r1 &= ~m (rw)
                "5501020000000000", // if r1 != 0 goto +2
                "b700000001000000", // r0 = 1
                "9500000000000000", // exit
                // allow c 1:3 rwm
                "5502040002000000", // if r2 != 2 goto +4
                "5504030001000000", // if r4 != 1 goto +3
                "5505020003000000", // if r5 != 3 goto +2
                "b700000001000000", // r0 = 1
                "9500000000000000", // exit
                // deny a: unconditional, and the end
                "b700000000000000", // r0 = 0
                "9500000000000000", // exit
            ]
        );
    }

    #[test]
    fn default_program_ends_with_one_deny() {
        let p = device_program(&default_rules()).unwrap();
        let insns = p.insns();
        assert_eq!(insns[insns.len() - 2..], [Insn::mov64(R0, 0), Insn::exit()]);
        // 6 prelude + 2 mknod rules of 6 + 7 exact char rules of 5 + pts (4) + 2
        assert_eq!(insns.len(), 6 + 2 * 6 + 7 * 5 + 4 + 2);
        assert_eq!(p.to_bytes().len(), insns.len() * 8);
    }

    #[test]
    #[ignore = "needs root (loads BPF programs): scripts/test runs it"]
    fn kernel_verifier_accepts_the_programs() {
        // Loading needs CAP_BPF or CAP_SYS_ADMIN; no cgroup is touched.
        assert!(
            nix::unistd::geteuid().is_root(),
            "needs root (CAP_BPF or CAP_SYS_ADMIN)"
        );
        let partial = [
            DeviceRule::DENY_ALL,
            DeviceRule::allow_char(Some(1), Some(3), Access::ALL),
            DeviceRule {
                allow: false,
                ..DeviceRule::allow_char(Some(1), Some(3), Access::WRITE)
            },
            DeviceRule::allow_char(Some(1), None, Access::READ),
        ];
        let lists: [&[DeviceRule]; 3] = [&default_rules(), &partial, &partial[1..]];
        for rules in lists {
            let p = device_program(rules).unwrap();
            let mut log = vec![0u8; 64 * 1024];
            let r = crate::sys::bpf_prog_load_cgroup_device(&p.to_bytes(), Some(&mut log));
            assert!(
                r.is_ok(),
                "{rules:?}: {r:?}: {}",
                String::from_utf8_lossy(&log).trim_end_matches('\0')
            );
        }
    }

    #[test]
    fn without_a_catch_all_the_program_denies_at_the_end() {
        let p = device_program(&[DeviceRule::allow_char(Some(1), None, Access::READ)]).unwrap();
        let insns = p.insns();
        assert_eq!(insns[insns.len() - 2..], [Insn::mov64(R0, 0), Insn::exit()]);
        let e = device_program(&[DeviceRule::allow_char(Some(u32::MAX), None, Access::ALL)])
            .unwrap_err();
        assert!(matches!(e, Error::InvalidDeviceRules { .. }), "{e}");
    }
}
