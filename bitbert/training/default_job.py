"""The recipe of the embedded default job (`bitbert distill` with no teacher): MiniLM-L6 fine-tuned on
a subsample of the bundled SST-2 copy, then distilled to a fully binary student, on the CPU.

One frozen value owns every setting of that job; the CLI reads it, the docs and the records
(benchmarks/results/default_job_cpu.json) quote it, and a test keeps them in step. Chosen for a
two-core CPU inside ten minutes: the student's accuracy grows with the number of optimizer steps it
gets, so the job spends its time on one 1-1-1 stage (no 1-1-2 stage first, which halves the steps
for the same time) with small batches, and on a teacher fine-tuned on the same sentences (a
teacher trained on 2,000 sentences reaches about 77%, on 8,000 about 84%, on 16,000 about 88%). At
8,000 sentences the student ended near 75% (73.9-77.2 by thread count alone); 16,000 gave 78.0
in 7 minutes on two idle cores.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # no torch at import: the CLI's torch-free commands import this module
    from .train import TrainConfig


@dataclass(frozen=True)
class DefaultJob:
    """Every setting of the default job; command-line options override the student's."""

    train_examples: int = 16000  # of the bundled SST-2 training set (67,349 sentences); 7 min on two idle cores
    max_length: int = 64  # BiT's for SST-2; its sentences are far shorter, batches are padded per bucket
    teacher_epochs: float = 1.0
    teacher_lr: float = 1e-4
    teacher_batch_size: int = 32
    schedule: str = "1-1-1"
    epochs: float = 1.0
    lr: float = 5e-4  # BiT's lr for the small GLUE tasks: few steps need the larger one
    batch_size: int = 16  # more steps for the same examples: measured better than 32 at 8,000 sentences
    eval_every: int = 250  # four dev evaluations (872 sentences each) over the 1,000 steps: best and final

    def student_defaults(self) -> dict[str, Any]:
        """The student's `TrainConfig` fields, before command-line overrides."""
        return dict(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, max_length=self.max_length,
                    eval_every=self.eval_every)

    def teacher_config(self, student: TrainConfig) -> TrainConfig:
        """The teacher's fine-tuning: the student's run settings (seed, length, --max-steps, precision)
        with the teacher's own epochs, lr and batch, evaluated once at the end."""
        return student.replace(epochs=self.teacher_epochs, lr=self.teacher_lr, batch_size=self.teacher_batch_size,
                               eval_every=0)


DEFAULT_JOB = DefaultJob()
