"""Generated package k2rl.controller.v1, from

    protos/k2rl/controller/v1/controller.proto

by scripts/gen_protos.py. Do not edit: change the .proto and run `make protos`.
"""
