"""Generated package k2rl.judge.v1, from

    protos/k2rl/judge/v1/judge.proto

by scripts/gen_protos.py. Do not edit: change the .proto and run `make protos`.
"""
