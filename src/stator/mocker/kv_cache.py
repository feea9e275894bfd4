"""The scheduler's only view of the KV cache: a request's blocks in the shared ``BlockPool``.

As in vLLM's ``KVCacheManager``: a new request first looks up its longest cached prefix (at most
``num_tokens - 1`` tokens, so the last prompt token is always computed); allocation takes the
cached prefix blocks plus fresh private blocks up to the step's computed-token target; blocks that
become full and computed are cached under their sequence hash right away (so a later request in the
same step can reuse them); a finished or preempted request frees its blocks tail first.
"""

from __future__ import annotations

from stator.kv.block_pool import BlockPool, PrefixMatch
from stator.mocker.sequence import Sequence

NO_MATCH = PrefixMatch(0, 0)


class KvCacheManager:
    """Maps requests onto ``pool``. ``enable_prefix_caching`` False: no lookups, no caching."""

    def __init__(self, pool: BlockPool, enable_prefix_caching: bool = True) -> None:
        self.pool = pool
        self.block_size = pool.block_size
        self.enable_prefix_caching = enable_prefix_caching

    def blocks_for(self, num_tokens: int) -> int:
        """Blocks needed to hold ``num_tokens`` tokens."""
        return -(-num_tokens // self.block_size)

    def prefix_match(self, seq: Sequence) -> PrefixMatch:
        """The cached prefix a new (or resumed) request can reuse."""
        if not self.enable_prefix_caching:
            return NO_MATCH
        max_blocks = (seq.num_tokens - 1) // self.block_size
        if max_blocks <= 0:
            return NO_MATCH
        if max_blocks > len(seq.block_hashes):
            for index in range(len(seq.block_hashes), max_blocks):
                seq.block_hash(index)
        return self.pool.match_prefix(seq.block_hashes, max_blocks)

    def allocate(self, seq: Sequence, target_tokens: int, prefix_blocks: int = 0) -> bool:
        """Give ``seq`` blocks for its first ``target_tokens`` tokens, reusing its first
        ``prefix_blocks`` cached blocks (only on its first allocation). False (nothing changed)
        when the pool is full."""
        have = seq.num_blocks
        fresh = self.blocks_for(target_tokens) - have - prefix_blocks
        if fresh <= 0 and prefix_blocks == 0:
            return True
        prefix = seq.block_hashes[:prefix_blocks] if prefix_blocks else ()
        hits = self.pool.allocate(prefix, max(fresh, 0))
        if hits is None:
            return False
        seq.blocks.extend(hits)
        seq.num_private_blocks += max(fresh, 0)
        return True

    def cache_computed(self, seq: Sequence) -> None:
        """Cache ``seq``'s blocks that are now full and computed."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        full = seq.num_computed_tokens // bs
        first = len(seq.blocks)
        if full <= first:
            return
        hashes = seq.block_hashes
        for index in range(len(hashes), full):
            seq.block_hash(index)
        parent = hashes[first - 1] if first else None
        token_ids = seq.tokens(first * bs, full * bs) if self.pool.record_events else None
        seq.blocks.extend(self.pool.cache_chain(hashes[first:full], parent, token_ids))
        seq.num_private_blocks -= full - first

    def free(self, seq: Sequence) -> None:
        """Release all of ``seq``'s blocks (tail first) and forget them."""
        self.pool.release(seq.blocks[::-1], seq.num_private_blocks)
        seq.blocks = []
        seq.num_private_blocks = 0
