"""numba's cache files are dropped when any engine source changes (bitbert.deploy.jitcache)."""
from bitbert.deploy import jitcache


def _tree(tmp_path):
    (tmp_path / "engine" / "__pycache__").mkdir(parents=True)
    (tmp_path / "kernels.py").write_text("def a(): pass\n")
    (tmp_path / "engine" / "fused.py").write_text("def b(): pass\n")
    cached = [tmp_path / "engine" / "__pycache__" / n for n in ("fused.b-1.py311.nbi", "fused.b-1.py311.1.nbc")]
    other = tmp_path / "engine" / "__pycache__" / "fused.cpython-311.pyc"
    for f in (*cached, other):
        f.write_bytes(b"x")
    return cached, other


def test_cache_kept_while_sources_are_unchanged_and_dropped_when_another_module_changes(tmp_path):
    cached, other = _tree(tmp_path)
    assert jitcache.refresh(tmp_path) == 2  # no stamp yet: compiled from unknown sources
    for f in cached:
        f.write_bytes(b"x")
    assert jitcache.refresh(tmp_path) == 0 and all(f.exists() for f in cached)  # stamped, unchanged
    (tmp_path / "kernels.py").write_text("def a(): return 1\n")  # a callee elsewhere changes
    assert jitcache.refresh(tmp_path) == 2
    assert not any(f.exists() for f in cached) and other.exists()  # only numba's files go


def test_digest_covers_paths_and_contents(tmp_path):
    _tree(tmp_path)
    d = jitcache.sources_digest(tmp_path)
    (tmp_path / "engine" / "fused.py").rename(tmp_path / "engine" / "fused2.py")
    assert jitcache.sources_digest(tmp_path) != d
