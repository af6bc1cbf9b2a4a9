"""Verifiers: pure functions from (reference, response) to a ``Verdict``, one module each."""
