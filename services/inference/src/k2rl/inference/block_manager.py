"""Paged KV-cache blocks with reference counts and a prefix cache.

The cache is ``num_blocks`` blocks of ``block_size`` token slots (slot = block *
block_size + offset, the addressing ``k2rl.models.kv_cache.CacheSlots`` expects). A
sequence owns a block table. A *full* block whose tokens were computed is registered under
a chain hash of (hash of the previous block, its tokens), so a later sequence with the
same prefix (n samples of one prompt, the next turn of a conversation, a resumed partial
rollout) reuses it instead of recomputing. Blocks nobody references stay cached until
their slot is needed (LRU eviction).

Shared blocks are only ever read: a sequence matches at most the full blocks of
``tokens[:-1]``, so the token that produces the next-token logits, and everything after
it, is always written into blocks of its own.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence


def _chain_hash(parent: int | None, tokens: Sequence[int]) -> int:
    return hash((parent, tuple(tokens)))


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be positive")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._free: deque[int] = deque(range(num_blocks))
        self._ref_counts = [0] * num_blocks
        self._block_hash: list[int | None] = [None] * num_blocks
        self._hash_to_block: dict[int, int] = {}
        self._evictable: OrderedDict[int, None] = OrderedDict()  # ref 0, hashed; LRU first

    # --- accounting -----------------------------------------------------------------

    @property
    def num_free_blocks(self) -> int:
        return len(self._free) + len(self._evictable)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_free_blocks

    @property
    def usage(self) -> float:
        return self.num_used_blocks / self.num_blocks

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # --- allocation -----------------------------------------------------------------

    def _match_prefix(self, token_ids: Sequence[int]) -> list[int]:
        """Cached blocks holding the leading full blocks of ``token_ids[:-1]``."""
        if not self.enable_prefix_caching:
            return []
        matched: list[int] = []
        parent: int | None = None
        bs = self.block_size
        for start in range(0, len(token_ids) - 1 - bs + 1, bs):
            parent = _chain_hash(parent, token_ids[start : start + bs])
            block = self._hash_to_block.get(parent)
            if block is None:
                break
            matched.append(block)
        return matched

    def _take_free_block(self) -> int:
        if self._free:
            block = self._free.popleft()
        else:
            block, _ = self._evictable.popitem(last=False)
            old_hash = self._block_hash[block]
            if old_hash is not None and self._hash_to_block.get(old_hash) == block:
                del self._hash_to_block[old_hash]
            self._block_hash[block] = None
        self._ref_counts[block] = 1
        return block

    def allocate(self, token_ids: Sequence[int]) -> tuple[list[int], int] | None:
        """A block table for a new (or recomputed) sequence and how many leading tokens
        are already cached; None if the cache cannot hold it now."""
        matched = self._match_prefix(token_ids)
        needed = self.blocks_for(len(token_ids)) - len(matched)
        reusable_idle = sum(1 for b in matched if self._ref_counts[b] == 0)
        if needed > self.num_free_blocks - reusable_idle:
            return None
        for block in matched:
            if self._ref_counts[block] == 0:
                del self._evictable[block]
            self._ref_counts[block] += 1
        table = matched + [self._take_free_block() for _ in range(needed)]
        return table, len(matched) * self.block_size

    def can_grow(self, block_table: list[int], num_tokens: int) -> bool:
        return self.blocks_for(num_tokens) - len(block_table) <= self.num_free_blocks

    def grow(self, block_table: list[int], num_tokens: int) -> bool:
        """Extend ``block_table`` in place to hold ``num_tokens``; False if out of blocks."""
        if not self.can_grow(block_table, num_tokens):
            return False
        while len(block_table) * self.block_size < num_tokens:
            block_table.append(self._take_free_block())
        return True

    def free(self, block_table: list[int]) -> None:
        """Drop one reference to each block; hashed blocks stay cached until evicted."""
        for block in reversed(block_table):
            self._ref_counts[block] -= 1
            if self._ref_counts[block] > 0:
                continue
            if self._block_hash[block] is not None:
                self._evictable[block] = None
            else:
                self._free.append(block)
        block_table.clear()

    # --- prefix cache ---------------------------------------------------------------

    def register_computed(
        self, token_ids: Sequence[int], block_table: Sequence[int], num_computed: int, block_hashes: list[int]
    ) -> None:
        """Register the full, computed blocks of a sequence not yet in ``block_hashes``.

        ``block_hashes`` is the sequence's chain of hashes of its leading full blocks; it is
        extended in place, so each block is hashed once over the sequence's life.
        """
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        full = min(num_computed // bs, len(block_table))
        for i in range(len(block_hashes), full):
            parent = block_hashes[-1] if block_hashes else None
            key = _chain_hash(parent, token_ids[i * bs : (i + 1) * bs])
            block_hashes.append(key)
            block = block_table[i]
            if self._block_hash[block] is None and key not in self._hash_to_block:
                self._block_hash[block] = key
                self._hash_to_block[key] = block

    def flush_prefix_cache(self) -> None:
        """Forget every cached prefix (after a weight update their KV is stale)."""
        self._hash_to_block.clear()
        self._block_hash = [None] * self.num_blocks
        self._free.extend(self._evictable)
        self._evictable.clear()
