"""A classic-BPF seccomp filter that bubblewrap installs before exec'ing the program.

Deny-list, not allow-list: the namespaces already take away the network, other processes
and the host filesystem; this removes the kernel interfaces that are the usual container
escape and kernel-exploit surface (mount, ptrace, bpf, io_uring, keyrings, module loading,
userfaultfd, perf, new namespaces). Denied calls fail with EPERM so well-behaved programs
that probe for them (libuv, glibc) degrade instead of dying. Only x86_64 has a table; on
other machines ``filter_program`` returns None and "seccomp" is not reported as active.
"""

from __future__ import annotations

import platform
import struct

# linux/audit.h: AUDIT_ARCH_X86_64 = EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

# asm/unistd_64.h numbers of the denied calls.
DENIED_X86_64: dict[str, int] = {
    "ptrace": 101, "syslog": 103, "uselib": 134, "ustat": 136, "sysfs": 139, "vhangup": 153,
    "pivot_root": 155, "_sysctl": 156, "adjtimex": 159, "acct": 163, "settimeofday": 164,
    "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169,
    "iopl": 172, "ioperm": 173, "create_module": 174, "init_module": 175, "delete_module": 176,
    "get_kernel_syms": 177, "query_module": 178, "quotactl": 179, "nfsservctl": 180,
    "lookup_dcookie": 212, "clock_settime": 227, "kexec_load": 246, "add_key": 248,
    "request_key": 249, "keyctl": 250, "unshare": 272, "perf_event_open": 298,
    "name_to_handle_at": 303, "open_by_handle_at": 304, "clock_adjtime": 305, "setns": 308,
    "process_vm_readv": 310, "process_vm_writev": 311, "finit_module": 313,
    "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425,
    "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428, "move_mount": 429,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
}

# linux/filter.h and linux/seccomp.h
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_RET_K = 0x06
_RET_KILL_PROCESS = 0x80000000
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_EPERM = 1
# offsets in struct seccomp_data
_NR_OFFSET = 0
_ARCH_OFFSET = 4


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def build_filter(denied: list[int]) -> bytes:
    """BPF program: wrong arch -> kill; x32 or a denied number -> EPERM; else allow."""
    checks = [(_JGE_K, X32_SYSCALL_BIT), *((_JEQ_K, nr) for nr in sorted(set(denied)))]
    program = [
        _insn(_LD_W_ABS, 0, 0, _ARCH_OFFSET),
        _insn(_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        _insn(_RET_K, 0, 0, _RET_KILL_PROCESS),
        _insn(_LD_W_ABS, 0, 0, _NR_OFFSET),
    ]
    # After the checks: [allow, deny]. Check i jumps over the remaining checks and the allow.
    for index, (code, value) in enumerate(checks):
        remaining = len(checks) - index - 1
        program.append(_insn(code, remaining + 1, 0, value))
    program.append(_insn(_RET_K, 0, 0, _RET_ALLOW))
    program.append(_insn(_RET_K, 0, 0, _RET_ERRNO | _EPERM))
    return b"".join(program)


def filter_program() -> bytes | None:
    """The filter for this machine, or None where there is no syscall table for it."""
    if platform.machine() != "x86_64":
        return None
    return build_filter(list(DENIED_X86_64.values()))
