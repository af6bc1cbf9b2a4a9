"""Generated package k2rl.trainer.v1, from

    protos/k2rl/trainer/v1/trainer.proto

by scripts/gen_protos.py. Do not edit: change the .proto and run `make protos`.
"""
