"""The default thread count never makes the engine slower than 1 thread on a machine whose cores
are all busy (more busy processes than cores started beside it)."""
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import pytest

from bitbert.deploy.bench import export_random_bit, random_classifier
from bitbert.deploy.engine import load_packed
from bitbert.deploy.engine.threads import idle_threads, running_elsewhere

SHAPE = dict(model_type="bert", hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
             vocab_size=500, num_labels=2)


def _median_ms_in_turns(engines, ids, calls=9):
    """Median ms per call of each engine, the engines called in turns (a load that comes and goes
    hits them alike)."""
    for engine in engines:
        engine.logits(ids)
    times = [[] for _ in engines]
    for _ in range(calls):
        for engine, spent in zip(engines, times):
            t0 = time.perf_counter()
            engine.logits(ids)
            spent.append(time.perf_counter() - t0)
    return [statistics.median(spent) * 1e3 for spent in times]


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    return export_random_bit(random_classifier(SHAPE), tmp_path_factory.mktemp("thr") / "m.bitbert", 64)


def test_idle_threads_bounds():
    assert 1 <= idle_threads(1) == 1
    assert 1 <= idle_threads(64) <= (os.cpu_count() or 1)
    assert running_elsewhere() >= 0


def test_default_threads_not_slower_than_one_on_busy_machine(packed):
    cores = os.cpu_count() or 1
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores + 1)]
    try:
        time.sleep(0.3)  # let the scheduler see them running
        ids = np.random.default_rng(0).integers(1, 500, (4, 64))  # a few ms a call: longer than scheduling jitter
        t_default, t_one = _median_ms_in_turns([load_packed(packed), load_packed(packed, threads=1)], ids)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert t_default <= 1.5 * t_one, f"default threads {t_default:.1f} ms vs 1 thread {t_one:.1f} ms"
