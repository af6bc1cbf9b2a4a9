"""Generated package k2rl.sandbox.v1, from

    protos/k2rl/sandbox/v1/sandbox.proto

by scripts/gen_protos.py. Do not edit: change the .proto and run `make protos`.
"""
