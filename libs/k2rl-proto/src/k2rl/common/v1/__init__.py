"""Generated package k2rl.common.v1, from

    protos/k2rl/common/v1/common.proto

by scripts/gen_protos.py. Do not edit: change the .proto and run `make protos`.
"""
