"""Batches of token blocks, in a seeded order that can be resumed exactly.

The order of epoch e is a permutation drawn from `np.random.default_rng((seed, e))`: it depends
only on (seed, epoch), so the loader's whole state is two integers (epoch, position), and a
resumed run continues with exactly the batches the interrupted one would have seen next.

With several processes (torchrun DDP) every rank draws the same permutation and takes every
world_size-th block starting at its rank: the shards of one epoch are disjoint and of equal size.
"""

import numpy as np

from ..errors import AtatError


class BatchLoader:
    """Infinite iterator of (batch_size, seq_len) int64 CPU tensors over a (n, seq_len) array."""

    def __init__(self, blocks: np.ndarray, batch_size: int, *, seed: int, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True):
        if blocks.ndim != 2:
            raise AtatError(f"expected blocks of shape (n, seq_len), got shape {blocks.shape}")
        if batch_size < 1:
            raise AtatError(f"batch size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise AtatError(f"rank {rank} is outside world size {world_size}")
        self.blocks = blocks
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        # Every rank gets the same number of blocks (drop the few that do not divide evenly),
        # so all ranks run the same number of steps per epoch.
        self.blocks_per_rank = len(blocks) // world_size
        self.batches_per_epoch = self.blocks_per_rank // batch_size
        if self.batches_per_epoch == 0:
            raise AtatError(
                f"not enough data for one batch: {len(blocks)} blocks of {blocks.shape[1]} tokens "
                f"give {self.blocks_per_rank} per process, fewer than the batch size {batch_size}",
                hint="use a smaller batch (--set train.batch_size=N) or shorter sequences, "
                     "or more data",
            )
        self.epoch = 0
        self.position = 0  # batches already taken in the current epoch
        self._order_epoch, self._order = None, None

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return self.batches_per_epoch

    def _epoch_order(self, epoch: int) -> np.ndarray:
        """This rank's block indices for an epoch (cached: it is used batch after batch)."""
        if self._order_epoch != epoch:
            n = self.blocks_per_rank * self.world_size
            if self.shuffle:
                perm = np.random.default_rng((self.seed, epoch)).permutation(len(self.blocks))[:n]
            else:
                perm = np.arange(n)
            self._order_epoch, self._order = epoch, perm[self.rank::self.world_size]
        return self._order

    def next_batch(self):
        import torch  # here, not at import: tokenizer worker processes import this package

        if self.position >= self.batches_per_epoch:  # the last incomplete batch is dropped
            self.epoch, self.position = self.epoch + 1, 0
        order = self._epoch_order(self.epoch)
        start = self.position * self.batch_size
        index = order[start:start + self.batch_size]
        self.position += 1
        # Fancy indexing copies the rows out of the memmap; int64 is what embeddings want.
        return torch.from_numpy(self.blocks[index].astype(np.int64))

    def __iter__(self):
        return self

    def __next__(self):
        return self.next_batch()

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
