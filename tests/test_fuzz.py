"""Fuzzing the readers of untrusted files (hypothesis). A few seconds here; set BITBERT_FUZZ_EXAMPLES
(e.g. 5000) for a long run.

Packed files: each example mutates an exported file (metadata JSON values, tensor dtypes / shapes /
values, repeated or removed tensors, raw bytes), recomputes its checksums, then loads it and runs it
on a short input. Allowed outcomes: PackedFormatError, EngineError (a valid file the engine does not
run), or a run whose logits have the model's shape and repeat exactly on a second call (an
out-of-bounds read would not). The examples run in a subprocess so that a crash by signal (a
segfault, heap corruption) fails the test with its falsifying example instead of killing pytest.

Data files: random TSV / CSV / JSONL bytes through `bitbert.tasks` give a result or a DataError.
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("BITBERT_FUZZ_EXAMPLES", "0")) or None
LONG = EXAMPLES is not None


def _settings(default: int):
    return settings(max_examples=EXAMPLES or default, deadline=None, database=None, derandomize=not LONG,
                    suppress_health_check=list(HealthCheck), print_blob=True)


# ----------------------------------------------------------------------------- packed files

JSON_VALUES = st.one_of(
    st.sampled_from([0, -1, 1, 2, 3, 7, 63, 64, 65, 200, 10**9, 2**31, 2**63, -(2**63), 1e9, 0.5, -0.0,
                     float("nan"), float("inf"), True, False, None, "", "bool", "softmax", "gelu", "roberta",
                     [], {}, [64, 1], [1, 64], {"0": "a"}]),
    st.integers(), st.floats(), st.text(max_size=8), st.lists(st.integers(-2, 300), max_size=3))


def _paths(obj, prefix=()):
    """Every path into a JSON tree (dict keys and list indices), the root excluded."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        yield prefix + (key,)
        yield from _paths(value, prefix + (key,))


def _mutate_json(draw, obj):
    paths = list(_paths(obj))
    if not paths:
        return draw(JSON_VALUES)
    path = draw(st.sampled_from(paths))
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    action = draw(st.sampled_from(["replace", "replace", "delete", "duplicate"]))
    if action == "delete":
        del parent[path[-1]]
    elif action == "duplicate" and isinstance(parent, list):
        parent.insert(path[-1], parent[path[-1]])
    else:
        parent[path[-1]] = draw(JSON_VALUES)
    return obj


DTYPES = [np.float16, np.float32, np.float64, np.int64, np.uint64, np.uint8, np.int32]
SPECIALS = [np.nan, np.inf, -np.inf, 0.0, 1e30, -1e30, 1e-40, 2**64 - 1, 1]


def _mutate_tensors(draw, tensors):
    names = sorted(tensors)
    name = draw(st.sampled_from(names))
    a = tensors[name]
    action = draw(st.sampled_from(["remove", "repeat", "flatten", "slice", "retype", "values", "rename", "add"]))
    if action == "remove":
        del tensors[name]
    elif action == "repeat":  # e.g. value.weight_bits stacked 4 times
        tensors[name] = np.concatenate([a.reshape(a.shape or (1,))] * draw(st.integers(2, 4)))
    elif action == "flatten":
        tensors[name] = a.reshape(-1).copy()
    elif action == "slice":
        tensors[name] = a.reshape(-1)[: draw(st.integers(0, max(0, a.size - 1)))].copy()
    elif action == "retype":
        with np.errstate(over="ignore", invalid="ignore"):
            tensors[name] = a.astype(draw(st.sampled_from(DTYPES)))
    elif action == "values" and a.size:
        b = a.copy().reshape(-1)
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, b.size - 1))
            if b.dtype == np.uint64:
                b[i] = np.uint64(draw(st.integers(0, 2**64 - 1)))
            else:
                with np.errstate(over="ignore", invalid="ignore"):
                    b[i] = np.asarray(draw(st.sampled_from(SPECIALS))).astype(b.dtype)
        tensors[name] = b.reshape(a.shape)
    elif action == "rename":  # two tensors swapped: right names, wrong places
        other = draw(st.sampled_from(names))
        tensors[name], tensors[other] = tensors[other], a
    else:  # a stowaway under a plausible name
        tensors[name.replace("layers.0", "layers.9").replace("alpha", "gamma") + ".x"] = a.copy()


@st.composite
def packed_mutations(draw, data: bytes):
    from packed_mutations import reseal, split, with_metadata, with_tensors

    kind = draw(st.sampled_from(["metadata", "tensors", "payload bytes", "header bytes"]))
    if kind == "metadata":
        key = draw(st.sampled_from(["model_config", "layout", "quant_config"]))
        return with_metadata(data, key, lambda obj: _mutate_json(draw, obj))
    if kind == "tensors":
        return with_tensors(data, lambda tensors: _mutate_tensors(draw, tensors))
    header, payload = split(data)
    if kind == "payload bytes":  # values change, checksums recomputed: only the value checks stand
        buf = bytearray(payload)
        for _ in range(draw(st.integers(1, 16))):
            buf[draw(st.integers(0, len(buf) - 1))] ^= 1 << draw(st.integers(0, 7))
        return reseal(header, bytes(buf))
    buf = bytearray(data)  # header bytes: the JSON usually breaks (checksums as they are)
    for _ in range(draw(st.integers(1, 4))):
        buf[draw(st.integers(0, 8 + int.from_bytes(data[:8], "little") - 1))] = draw(st.integers(0, 255))
    return bytes(buf)


def run_mutated(data: bytes, where: Path) -> str:
    """Load and run one file; the outcome's name. Anything but the allowed outcomes raises."""
    from bitbert.deploy.engine import EngineError, load_packed
    from bitbert.deploy.packing import PackedFormatError

    where.write_bytes(data)
    try:
        engine = load_packed(where, threads=1)
    except (PackedFormatError, EngineError):
        return "refused"
    L = min(6, engine.max_length)
    ids = np.array([[2, 7, 9, 11, 4, 3][:L], [2, 5, 3, 0, 0, 0][:L]], np.int64) % engine.vocab_size
    mask = np.array([[1] * L, [1, 1, 1, 0, 0, 0][:L]])
    first, second = engine.logits(ids, mask), engine.logits(ids, mask)
    assert first.shape == (2, engine.num_labels) and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)  # an out-of-bounds read would not repeat
    try:
        assert len(engine.predict(["a good film", ("a plot", "dull")])) == 2
    except (PackedFormatError, EngineError):
        pass
    return "ran"


def fuzz_packed(files: list[str], examples: int, derandomize: bool) -> None:
    """The subprocess's body: hypothesis over mutations of the given packed files; prints how many
    mutated files were refused and how many ran (so the fuzzer is seen to reach the engine)."""
    originals = [Path(f).read_bytes() for f in files]
    where = Path(tempfile.mkdtemp()) / "mutated.bitbert"
    outcomes = {"refused": 0, "ran": 0}

    @settings(max_examples=examples, deadline=None, database=None, derandomize=derandomize,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(st.data())
    def check(data):
        original = data.draw(st.sampled_from(originals), label="file")
        outcomes[run_mutated(data.draw(packed_mutations(original), label="mutated bytes"), where)] += 1

    check()
    print(json.dumps(outcomes))


@pytest.fixture(scope="module")
def fuzz_files(tmp_path_factory):
    """Small packed files covering every record kind: BiT 1-1-1 with a tokenizer, BiBERT (sign
    quantizers, per-row scales, bool map), BiT 1-1-2 with BiPFT estimators (multi-bit attention),
    RoBERTa (position offset, one token type)."""
    import bitbert
    from test_engine import tiny_roberta, tiny_tokenizer
    from test_packing import binary_model

    out = tmp_path_factory.mktemp("fuzz")
    models = {"bit": binary_model("bit"), "bibert": binary_model("bibert"),
              "bipft112": binary_model("bit", "1-1-2", residual_rank=1), "roberta": tiny_roberta()}
    return [str(bitbert.export(m, out / f"{name}.bitbert", tokenizer=tiny_tokenizer()))
            for name, m in models.items()]


def test_fuzzed_packed_files_give_a_format_error_or_a_correct_run(fuzz_files):
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import test_fuzz; "
              "test_fuzz.fuzz_packed(sys.argv[4:], int(sys.argv[2]), sys.argv[3] == '1')")
    proc = subprocess.run([sys.executable, "-c", script, str(Path(__file__).parent), str(EXAMPLES or 150),
                           "0" if LONG else "1", *fuzz_files], capture_output=True, text=True,
                          timeout=None if LONG else 600, cwd=Path(__file__).parents[1])
    report = "\n".join(line[:300] for line in (proc.stdout + proc.stderr).splitlines()[-80:])
    assert proc.returncode == 0, (f"fuzzing the packed reader ended with {proc.returncode} "
                                  f"({'a signal' if proc.returncode < 0 else 'an error'}):\n{report}")
    outcomes = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcomes["ran"] > 0 and outcomes["refused"] > 0, outcomes  # mutations reach the engine too


# ----------------------------------------------------------------------------- data files

CELLS = st.one_of(st.sampled_from(["0", "1", "pos", "neg", "", " ", "1.5", "nan", "inf", "1e39", "-0", "\"", "'",
                                   "a\tb", "a,b", "\"x\ny\"", "{", "[1]", "null", "true", "\ufeff", "sentence",
                                   "label"]),
                  st.text(max_size=12))


@st.composite
def data_files(draw):
    fmt = draw(st.sampled_from(["tsv", "csv", "jsonl"]))
    rows = draw(st.lists(st.lists(CELLS, min_size=0, max_size=4), max_size=6))
    if fmt == "jsonl":
        keys = st.sampled_from(["sentence", "label", "text", ""])
        values = st.one_of(CELLS, st.integers(), st.floats(), st.booleans(), st.none(), st.lists(CELLS, max_size=2))
        objs = draw(st.lists(st.one_of(st.dictionaries(keys, values, max_size=3), values), max_size=5))
        text = "\n".join(json.dumps(o) if draw(st.booleans()) else json.dumps(o)[:-1] for o in objs)
    else:
        sep = "\t" if fmt == "tsv" else ","
        header = draw(st.sampled_from([["sentence", "label"], ["label", "sentence"], ["sentence"], []]))
        text = "\n".join(sep.join(r) for r in [header, *rows])
    raw = text.encode("utf-8")
    if draw(st.booleans()):  # byte damage: invalid UTF-8, stray NULs, cut lines
        buf = bytearray(raw)
        for _ in range(draw(st.integers(1, 4))):
            if buf:
                buf[draw(st.integers(0, len(buf) - 1))] = draw(st.integers(0, 255))
        raw = bytes(buf)
    compress = draw(st.sampled_from(["", "", ".gz", ".xz"]))
    if compress == ".gz":
        import gzip

        raw = gzip.compress(raw)[: draw(st.integers(0, 10**6))]
    elif compress == ".xz":
        import lzma

        raw = lzma.compress(raw)[: draw(st.integers(0, 10**6))]
    return f"data.{fmt}{compress}", raw


@_settings(300)
@given(data_files())
def test_fuzzed_data_files_give_examples_or_a_data_error(file):
    from bitbert.tasks import DataError, TaskSpec, load_custom, load_split

    name, raw = file
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(raw)
        for load in (lambda: load_custom(path, ["sentence"], "label"),
                     lambda: load_custom(path, ["sentence"], "label", regression=True),
                     lambda: load_split(TaskSpec("t", ("sentence",), "label", ("0", "1")), path)):
            try:
                examples = load()
            except DataError:
                continue
            examples = examples[1] if isinstance(examples, tuple) else examples
            assert len(examples.texts_a) == len(examples.labels) > 0
