"""Generated package k2rl.inference.v1, from

    protos/k2rl/inference/v1/inference.proto

by scripts/gen_protos.py. Do not edit: change the .proto and run `make protos`.
"""
