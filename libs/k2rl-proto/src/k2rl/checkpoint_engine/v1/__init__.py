"""Generated package k2rl.checkpoint_engine.v1, from

    protos/k2rl/checkpoint_engine/v1/checkpoint_engine.proto

by scripts/gen_protos.py. Do not edit: change the .proto and run `make protos`.
"""
