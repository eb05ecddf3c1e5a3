"""BiPFT pretraining's data: batches of an endless packed corpus stream, masked on the fly and
resumable exactly (`StreamBatches`), fixed masked batches for calibration and evaluation."""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from ..tasks.corpus import CorpusStats, MLMCollator, PackedMLMStream, iter_lines
from .pretrain_config import PretrainConfig


class StreamBatches:
    """`bitbert.training.train.Batches` over an endless packed stream, masked on the fly: ``len`` is the
    step budget of this process. The state (batches consumed, masking generator) restores the
    exact continuation; with ``num_workers=1`` packing runs in a DataLoader worker."""

    def __init__(self, stream: PackedMLMStream, collator: MLMCollator, batch_size: int, steps: int,
                 num_workers: int = 0) -> None:
        self.stream, self.collator, self.batch_size = stream, collator, batch_size
        self.steps, self.num_workers = steps, num_workers
        self.batches_done = 0

    def __len__(self) -> int:
        return self.steps

    def set_epoch(self, epoch: int) -> None:
        """No-op: corpus passes are the stream's own (it reshuffles each one)."""

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": 0, "batches_done": self.batches_done, "stream": self._stream_state(),
                "masking": self.collator.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state["stream"])  # raises if the stream is configured differently
        self.collator.load_state_dict(state["masking"])
        self.batches_done = int(state["batches_done"])

    def _stream_state(self) -> dict[str, Any]:
        # The main process's stream does not count what a worker consumed: derive it.
        return {**self.stream.state_dict(), "sequences_done": self.batches_done * self.batch_size}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        self.stream.load_state_dict(self._stream_state())
        if self.num_workers:
            from torch.utils.data import DataLoader

            # Own generator: creating the iterator must not draw from the global RNG (dropout).
            groups: Iterator[list] = iter(DataLoader(self.stream, batch_size=self.batch_size, collate_fn=list,
                                                     num_workers=self.num_workers, prefetch_factor=4,
                                                     generator=torch.Generator()))
        else:
            items = iter(self.stream)
            groups = iter(lambda: list(itertools.islice(items, self.batch_size)), [])
        for group in groups:
            batch = self.collator(group)  # masking here, in this process: its generator is checkpointed
            self.batches_done += 1
            yield batch


def corpus_stream(paths: Sequence[Path], tokenizer, config: PretrainConfig, **kwargs) -> PackedMLMStream:
    return PackedMLMStream(paths, tokenizer, config.seq_len, nsp=config.nsp, seed=config.seed,
                           holdout_every=config.holdout_every, shuffle_buffer=config.shuffle_buffer, **kwargs)


def fixed_batches(stream: PackedMLMStream, tokenizer, config: PretrainConfig, n: int, batch_size: int,
                   seed: int) -> list[dict[str, torch.Tensor]]:
    """The first ``n`` sequences of ``stream``, masked once with their own seed, in batches."""
    items = list(itertools.islice(stream, n))
    collator = MLMCollator(tokenizer, config.mlm_probability, seed=seed)
    return [collator(items[i:i + batch_size]) for i in range(0, len(items), batch_size)]


def scan_corpus(paths: Sequence[Path]) -> CorpusStats:
    """Count lines, empty ones and non-UTF-8 ones (one untokenized read of the files)."""
    stats = CorpusStats()
    for _ in iter_lines(paths, stats):
        pass
    return stats
