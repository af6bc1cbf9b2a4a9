"""Pure pieces: output matching, limit resolution, the seccomp program, percentiles."""

from __future__ import annotations

import struct

import pytest

from k2rl.core.errors import InvalidArgument
from k2rl.sandbox.matching import compare
from k2rl.sandbox.model import Limits, OutputMatch
from k2rl.sandbox.pool import percentile
from k2rl.sandbox.seccomp import DENIED_X86_64, build_filter


@pytest.mark.parametrize(("expected", "actual", "match", "tolerance", "message"), [
    (b"1 2\n3\n", b"1 2  \n3\n\n\n", OutputMatch.TRIMMED_LINES, 0, ""),
    (b"1\n2\n", b"1\n3\n", OutputMatch.TRIMMED_LINES, 0, "line 2: expected '2', got '3'"),
    (b"1\n", b"1\n2\n", OutputMatch.TRIMMED_LINES, 0, "expected 1 lines, got 2"),
    (b"a\n", b"a", OutputMatch.EXACT, 0, "byte 1: expected '\\n', got ''"),
    (b"0.5 x", b"0.5000001\nx", OutputMatch.TOKENS, 1e-6, ""),
    (b"0.5", b"0.6", OutputMatch.TOKENS, 1e-6, "token 1: expected '0.5', got '0.6'"),
    (b"nan", b"nan", OutputMatch.TOKENS, 1e-6, ""),
])
def test_compare(expected, actual, match, tolerance, message) -> None:
    assert compare(expected, actual, match, tolerance) == message


def test_limits_resolve_defaults_and_name_the_field_above_a_ceiling() -> None:
    defaults = Limits(1000, 1000, 100, 10, 10, 10)
    ceilings = Limits(5000, 5000, 500, 50, 50, 50)
    assert defaults.resolve({"memory_bytes": 200}, ceilings, "limits") == Limits(1000, 1000, 200, 10, 10, 10)
    with pytest.raises(InvalidArgument) as error:
        defaults.resolve({"max_processes": 51}, ceilings, "requests[2].limits")
    assert error.value.field == "requests[2].limits.max_processes"


def test_seccomp_program_jumps_land_on_the_deny_return() -> None:
    program = build_filter(list(DENIED_X86_64.values()))
    instructions = [struct.unpack("=HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]
    deny = len(instructions) - 1
    assert instructions[deny] == (0x06, 0, 0, 0x00050001)  # RET ERRNO(EPERM)
    assert instructions[deny - 1] == (0x06, 0, 0, 0x7FFF0000)  # RET ALLOW
    checks = instructions[4:deny - 1]
    assert len(checks) == len(DENIED_X86_64) + 1
    for offset, (_, jt, _, _) in enumerate(checks):
        assert 4 + offset + 1 + jt == deny


def test_percentile_nearest_rank() -> None:
    values = list(range(1, 101))
    assert (percentile(values, 50), percentile(values, 99), percentile([], 50)) == (50, 99, 0.0)
