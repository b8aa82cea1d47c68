"""This process's place among data-parallel ranks (`World`): a plain value the data loaders shard by and the
engine's process group fills in (gattanet.engine.distributed), so the data modules need no engine.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, saves resume files and writes outputs."""
        return self.rank == 0

    def share(self, n: int) -> slice:
        """This rank's contiguous part of a global batch of n items (sizes differ by at most one)."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))


SINGLE = World()
