"""``infinity-train`` with one injected failure: ``python rank_fault.py RANK STEP <cli args>`` makes rank RANK raise
at optimizer step STEP (inside its micro step, while the other ranks go on into their collectives)."""

from __future__ import annotations

import os
import sys


class InjectedFailure(RuntimeError):
    """The failure under test."""


def main() -> int:
    fail_rank, fail_step = int(sys.argv[1]), int(sys.argv[2])
    from infinity_train.cli import main as cli_main
    from infinity_train.transformer_trainer import TransformerTrainer

    real = TransformerTrainer.micro_step

    def micro_step(self, batch, it):
        if self.dist.rank == fail_rank and it == fail_step:
            raise InjectedFailure(f"injected failure on rank {fail_rank} at step {fail_step}")
        return real(self, batch, it)

    TransformerTrainer.micro_step = micro_step
    print(f"rank {os.environ.get('RANK')} pid {os.getpid()}", flush=True)
    return cli_main(sys.argv[3:])


if __name__ == "__main__":
    sys.exit(main())
