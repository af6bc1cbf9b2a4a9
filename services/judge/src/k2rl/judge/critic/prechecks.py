"""Deterministic pre-checks of the prescriptive rubrics (Appendix F.2).

Cheap pattern checks run before the critic: a response caught here violates the rubric
whatever the critic says, and when exactly one of two responses is caught on a mandatory
rubric the comparison is decided without a critic call. Patterns are deliberately narrow
(precision over recall); the critic still judges what they miss.
"""

from __future__ import annotations

import re

from k2rl.judge.critic.rubrics import NO_EXPLICIT_JUSTIFICATION, NO_INITIAL_PRAISE
from k2rl.judge.text import strip_thinking

_PRAISE_ADJECTIVES = (
    r"(?:great|good|excellent|fantastic|wonderful|amazing|brilliant|beautiful|fascinating|insightful|"
    r"thoughtful|interesting|intriguing|lovely|perfect|superb|terrific|awesome|smart|astute|profound)"
)
_PRAISE_TARGET = r"(?:question|query|point|observation|idea|prompt|request|thought|topic|inquiry|one)"
_INITIAL_PRAISE = re.compile(
    rf"^\W*(?:(?:what\s+an?|that'?s\s+an?|this\s+is\s+an?|such\s+an?|an?|oh,?\s+an?|wow,?\s+(?:what\s+)?an?)\s+)?"
    rf"(?:really\s+|truly\s+|very\s+|absolutely\s+)?{_PRAISE_ADJECTIVES}\s+{_PRAISE_TARGET}\b"
    rf"|^\W*(?:i\s+)?love\s+(?:this|that|your)\s+{_PRAISE_TARGET}\b"
    rf"|^\W*(?:great|excellent|wonderful|fantastic)\s*[!.]",
    re.IGNORECASE,
)
_JUSTIFICATION = re.compile(
    r"\b(?:this|my|the\s+above)\s+(?:response|answer|explanation|reply)\s+"
    r"(?:is|was)?\s*(?:concise|clear|comprehensive|thorough|accurate|well[- ]structured|helpful|complete)\b"
    r"|\b(?:this|my)\s+(?:response|answer|reply)\s+(?:successfully\s+|fully\s+|directly\s+)?"
    r"(?:addresses|answers|fulfills|fulfils|satisfies|meets)\s+(?:your|the\s+user'?s?|all)\b"
    r"|\bI(?:\s+have|'ve)\s+(?:kept|made)\s+(?:this|the|my)\s+(?:response|answer)\s+\w+\s+(?:to|so)\b",
    re.IGNORECASE,
)


def initial_praise(response: str) -> str | None:
    """The opening compliment, if the response starts with one."""
    opening = strip_thinking(response).lstrip()[:200]
    match = _INITIAL_PRAISE.search(opening)
    return match.group(0).strip() if match else None


def explicit_justification(response: str) -> str | None:
    """A sentence that argues the response is good rather than giving content."""
    match = _JUSTIFICATION.search(strip_thinking(response)[-20_000:])
    return match.group(0).strip() if match else None


PRECHECKS = {
    NO_INITIAL_PRAISE.name: initial_praise,
    NO_EXPLICIT_JUSTIFICATION.name: explicit_justification,
}


def prescriptive_violations(response: str, rubric_names: set[str]) -> dict[str, str]:
    """Rubric name -> offending excerpt, for the pre-checkable rubrics in ``rubric_names``."""
    found = {}
    for name, check in PRECHECKS.items():
        if name in rubric_names:
            excerpt = check(response)
            if excerpt is not None:
                found[name] = excerpt
    return found
