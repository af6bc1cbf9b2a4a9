"""Logic puzzles with programmatic checkers (K2 §3.2.1): each answer is verified against
the puzzle itself (its numbers, its givens, its equation), never against a stored solution,
and model text is parsed by small grammars here, never ``eval``-ed."""
