"""Self-critique rubric reward (K2 §3.2.2): a critic LLM compares responses pairwise against
core, prescriptive and task rubrics (Appendix F); outcomes become per-response rewards."""
