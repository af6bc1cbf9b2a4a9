"""Bucket planning and plan validation."""

import pytest
import torch

from k2rl.weights import (
    BucketLayout,
    LayoutError,
    TensorPiece,
    TensorSpec,
    plan_buckets,
    validate_plan,
)


def _specs() -> list[TensorSpec]:
    return [
        TensorSpec("a", (3, 5), torch.float32),      # 60 bytes
        TensorSpec("b", (7,), torch.bfloat16),       # 14 bytes
        TensorSpec("big", (40, 16), torch.float32),  # 2560 bytes: larger than a bucket
        TensorSpec("c", (), torch.int64),            # scalar
        TensorSpec("flag", (3,), torch.bool),
    ]


def test_plan_aligns_offsets_keeps_small_tensors_whole_and_splits_big_ones() -> None:
    plan = plan_buckets(_specs(), bucket_bytes=1024, alignment=256)
    assert [b.index for b in plan.buckets] == list(range(len(plan.buckets)))
    assert all(b.byte_size <= 1024 for b in plan.buckets)
    first = plan.buckets[0]
    assert [(p.name, p.byte_offset, p.byte_size) for p in first.pieces] == [("a", 0, 60), ("b", 256, 14)]
    big = [(b.index, p) for b in plan.buckets for p in b.pieces if p.name == "big"]
    assert [p.tensor_byte_offset for _, p in big] == [0, 1024, 2048]
    assert sum(p.byte_size for _, p in big) == 2560
    assert all(p.byte_size % 4 == 0 for _, p in big)
    assert validate_plan(plan.buckets) == {s.name: s for s in _specs()}
    assert plan.total_bytes == sum(b.byte_size for b in plan.buckets)


def test_split_keeps_whole_elements_when_bucket_is_not_a_multiple_of_the_element_size() -> None:
    plan = plan_buckets([TensorSpec("x", (100,), torch.float64)], bucket_bytes=256, alignment=256)
    sizes = [b.pieces[0].byte_size for b in plan.buckets]
    assert sum(sizes) == 800 and all(s % 8 == 0 for s in sizes)


def test_plan_rejects_duplicates_and_bad_sizes() -> None:
    with pytest.raises(LayoutError, match="twice"):
        plan_buckets([TensorSpec("a", (1,), torch.float32)] * 2)
    with pytest.raises(LayoutError, match="multiple of alignment"):
        plan_buckets([], bucket_bytes=1000, alignment=256)
    with pytest.raises(ValueError, match="cannot be carried"):
        plan_buckets([TensorSpec("z", (2,), torch.complex64)])


def _bucket(index: int, size: int, *pieces: TensorPiece) -> BucketLayout:
    return BucketLayout(index, size, pieces)


@pytest.mark.parametrize(("buckets", "message"), [
    ([_bucket(1, 16, TensorPiece(TensorSpec("a", (4,), torch.float32), 0, 16))], "dense"),
    ([_bucket(0, 16, TensorPiece(TensorSpec("a", (4,), torch.float32), 0, 16),
              TensorPiece(TensorSpec("b", (1,), torch.float32), 8, 4))], "overlaps"),
    ([_bucket(0, 8, TensorPiece(TensorSpec("a", (4,), torch.float32), 0, 16))], "past the bucket"),
    ([_bucket(0, 16, TensorPiece(TensorSpec("a", (4,), torch.float32), 0, 12))], "cover 12 of 16"),
    ([_bucket(0, 16, TensorPiece(TensorSpec("a", (4,), torch.float32), 2, 4, 0))], "aligned"),
    ([_bucket(0, 8, TensorPiece(TensorSpec("a", (4,), torch.float32), 0, 8)),
      _bucket(1, 8, TensorPiece(TensorSpec("a", (4,), torch.float16), 0, 8, 8))], "differs"),
    ([_bucket(0, 8, TensorPiece(TensorSpec("a", (4,), torch.float32), 0, 8, 8))], "gap"),
])
def test_validate_plan_rejects_inconsistent_plans(buckets: list[BucketLayout], message: str) -> None:
    with pytest.raises(LayoutError, match=message):
        validate_plan(buckets)


def test_validate_plan_enforces_the_buffer_size() -> None:
    plan = plan_buckets(_specs(), bucket_bytes=1024)
    with pytest.raises(LayoutError, match="above the buffer size"):
        validate_plan(plan.buckets, max_bucket_bytes=512)
