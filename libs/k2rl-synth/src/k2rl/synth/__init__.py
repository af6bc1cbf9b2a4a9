"""k2rl.synth: the agentic data synthesis pipeline of K2 report 3.1.1.

Stage 1 builds a tool repository (real specs imported from MCP / OpenAI JSON plus synthetic
tools evolved from domains), stage 2 samples agents and rubric tasks, stage 3 rolls out
multi-turn trajectories between a simulated user, the agent model and a tool simulator; the
judge keeps only trajectories that pass their rubric, and the survivors become SFT data.
"""
