"""Tests of the in-memory vector index, on real tiny indexes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unipgen.memory.vectors import CATALOG, AnnConfig, VectorIndex

DIM = 16


@pytest.fixture(autouse=True)
def _one_faiss_thread() -> None:
    # two threads on the shared cores can be far slower than one
    import faiss

    faiss.omp_set_num_threads(1)


def _normalised(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


_CENTRES = np.random.default_rng(0).standard_normal((20, DIM), dtype=np.float32)


def _clustered(rng: np.random.Generator, n: int) -> np.ndarray:
    """Normalised points around fixed centres, so IVF lists mean something."""
    x = _CENTRES[rng.integers(len(_CENTRES), size=n)]
    x += 0.3 * rng.standard_normal((n, DIM), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute_top_k(
    vectors: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int, metric: str
) -> np.ndarray:
    if metric == "ip":
        order = np.argsort(-(vectors @ q), kind="stable")
    else:
        order = np.argsort(((vectors - q) ** 2).sum(axis=1), kind="stable")
    return ids[order[:k]]


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return len(np.intersect1d(found, truth)) / len(truth)


def _users_and_catalog(rng: np.random.Generator, metric: str = "ip") -> tuple[VectorIndex, dict]:
    """An index with users 1..3 (50, 30, 5 vectors) and a 40-vector catalog; returns it and its data."""
    index = VectorIndex(DIM, metric)
    sizes = {1: 50, 2: 30, 3: 5, CATALOG: 40}
    data, next_id = {}, 0
    for owner, n in sizes.items():
        ids = np.arange(next_id, next_id + n, dtype=np.int64)
        vectors = _normalised(rng, n)
        index.add(ids, np.full(n, owner), vectors)
        data[owner] = (ids, vectors)
        next_id += n
    return index, data


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_search_user_equals_brute_force_over_that_user_only(metric: str) -> None:
    rng = np.random.default_rng(1)
    index, data = _users_and_catalog(rng, metric)
    for user in (1, 2, 3):
        ids, vectors = data[user]
        q = _normalised(rng, 1)[0]
        found, scores = index.search_user(user, q, 10)
        np.testing.assert_array_equal(found, _brute_top_k(vectors, ids, q, 10, metric))
        assert found.dtype == np.int64 and scores.dtype == np.float32
        assert set(found.tolist()) <= set(ids.tolist())
        # best first
        assert np.all(np.diff(scores) <= 0) if metric == "ip" else np.all(np.diff(scores) >= 0)
    assert len(index.search_user(3, q, 10)[0]) == 5  # fewer than k when the user has fewer


def test_l2_scores_are_squared_distances() -> None:
    rng = np.random.default_rng(2)
    index, data = _users_and_catalog(rng, "l2")
    ids, vectors = data[1]
    q = _normalised(rng, 1)[0]
    found, scores = index.search_user(1, q, 3)
    expected = ((vectors[np.searchsorted(ids, found)] - q) ** 2).sum(axis=1)
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5)


def test_search_global_sees_only_catalog() -> None:
    rng = np.random.default_rng(3)
    index, data = _users_and_catalog(rng)
    catalog_ids, catalog_vectors = data[CATALOG]
    # a query equal to a user's vector must still find only catalog items
    q = data[1][1][0]
    found, _ = index.search_global(q, 100)
    assert set(found.tolist()) == set(catalog_ids.tolist())
    np.testing.assert_array_equal(
        index.search_global(q, 7)[0], _brute_top_k(catalog_vectors, catalog_ids, q, 7, "ip")
    )
    assert index.ann_params is None  # far below min_train_size: exact


def test_query_may_be_a_row_vector() -> None:
    rng = np.random.default_rng(4)
    index, _ = _users_and_catalog(rng)
    q = _normalised(rng, 1)
    np.testing.assert_array_equal(index.search_global(q, 5)[0], index.search_global(q[0], 5)[0])
    np.testing.assert_array_equal(index.search_user(1, q, 5)[0], index.search_user(1, q[0], 5)[0])


def test_empty_index_and_unknown_user_return_empty_arrays() -> None:
    index = VectorIndex(DIM)
    q = np.ones(DIM, dtype=np.float32)
    for ids, scores in (
        index.search_user(7, q, 5),
        index.search_global(q, 5),
        index.search_global(q, 5, exact=True),
    ):
        assert ids.shape == (0,) and ids.dtype == np.int64
        assert scores.shape == (0,) and scores.dtype == np.float32
    assert len(index) == 0 and index.user_ids() == set() and index.ids().shape == (0,)


def _ann_index(
    rng: np.random.Generator, n: int = 2000
) -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    index = VectorIndex(DIM, ann=AnnConfig(min_train_size=1000, nprobe=8))
    ids = np.arange(n, dtype=np.int64) + 10_000
    vectors = _clustered(rng, n)
    index.add(ids, np.full(n, CATALOG), vectors)
    return index, ids, vectors


def _mean_recall(index: VectorIndex, queries: np.ndarray, k: int = 10) -> float:
    recalls = [
        _recall(index.search_global(q, k)[0], index.search_global(q, k, exact=True)[0])
        for q in queries
    ]
    return float(np.mean(recalls))


def test_ann_recall_and_add_after_training() -> None:
    rng = np.random.default_rng(5)
    index, _, _ = _ann_index(rng)
    queries = _clustered(rng, 100)  # same centres as the data, fresh points
    assert _mean_recall(index, queries) >= 0.9
    params = index.ann_params
    assert params is not None and params["index_type"] == "IVFFlat" and params["trained_on"] == 2000
    # vectors added after training are found by the trained index
    new_ids = np.arange(500, dtype=np.int64) + 50_000
    new_vectors = _clustered(rng, 500)
    index.add(new_ids, np.full(500, CATALOG), new_vectors)
    found, _ = index.search_global(new_vectors[0], 1)
    assert found[0] == new_ids[0]
    assert index.ann_params["trained_on"] == 2000  # 2500 < 4 * 2000: no retrain
    assert _mean_recall(index, queries) >= 0.9


def test_ann_retrains_after_growth_and_falls_back_to_exact_when_small() -> None:
    rng = np.random.default_rng(6)
    index, ids, _ = _ann_index(rng, n=1200)
    index.search_global(np.ones(DIM), 1)
    assert index.ann_params["trained_on"] == 1200
    index.add(np.arange(4000, dtype=np.int64), np.full(4000, CATALOG), _clustered(rng, 4000))
    index.search_global(np.ones(DIM), 1)
    assert index.ann_params["trained_on"] == 5200
    index.remove(np.arange(4000, dtype=np.int64))
    index.remove(ids[:300])
    index.search_global(np.ones(DIM), 1)
    assert index.ann_params is None  # 900 < min_train_size


def test_remove_hides_ids_from_every_search() -> None:
    rng = np.random.default_rng(7)
    index, data = _users_and_catalog(rng)
    user_ids, user_vectors = data[1]
    catalog_ids, catalog_vectors = data[CATALOG]
    gone = np.concatenate([user_ids[:10], catalog_ids[:10], [999_999]])  # one unknown id
    assert index.remove(gone) == 20
    assert index.remove(gone) == 0
    assert len(index) == 125 - 20 and user_ids[0] not in index
    found, _ = index.search_user(1, user_vectors[0], 100)
    assert set(found.tolist()) == set(user_ids[10:].tolist())
    found, _ = index.search_global(catalog_vectors[0], 100)
    assert set(found.tolist()) == set(catalog_ids[10:].tolist())
    # the rows moved to fill holes still score correctly
    q = user_vectors[20]
    np.testing.assert_array_equal(
        index.search_user(1, q, 5)[0], _brute_top_k(user_vectors[10:], user_ids[10:], q, 5, "ip")
    )


def test_remove_from_trained_ann() -> None:
    rng = np.random.default_rng(8)
    index, ids, vectors = _ann_index(rng)
    index.search_global(vectors[0], 1)  # trains
    assert index.remove(ids[:100]) == 100
    for q in vectors[:100:10]:
        assert not set(index.search_global(q, 10)[0].tolist()) & set(ids[:100].tolist())


def test_remove_user() -> None:
    rng = np.random.default_rng(9)
    index, data = _users_and_catalog(rng)
    assert index.user_ids() == {1, 2, 3}
    assert index.remove_user(2) == 30
    assert index.remove_user(2) == 0
    assert index.user_ids() == {1, 3}
    assert index.search_user(2, data[2][1][0], 5)[0].shape == (0,)
    assert not set(data[2][0].tolist()) & set(index.ids().tolist())
    # ids of a removed user can be added again
    index.add(data[2][0], np.full(30, 4), data[2][1])
    assert index.user_ids() == {1, 3, 4}


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_save_load_round_trip(tmp_path: Path, metric: str) -> None:
    rng = np.random.default_rng(10)
    index = VectorIndex(DIM, metric, AnnConfig(min_train_size=1000, nprobe=4))
    n = 1500
    index.add(np.arange(n, dtype=np.int64), np.full(n, CATALOG), _clustered(rng, n))
    index.add(np.arange(n, n + 60, dtype=np.int64), np.repeat([5, 6], 30), _normalised(rng, 60))
    index.remove(np.arange(0, n, 7))  # reorders blocks and the IVF lists
    queries = _clustered(rng, 20)
    before = [index.search_global(q, 10) for q in queries] + [
        index.search_user(5, q, 10) for q in queries
    ]

    index.save(tmp_path / "space", {"generation": 7})
    index.save(tmp_path / "space", {"generation": 8})  # a second save replaces the first
    loaded, meta = VectorIndex.load(tmp_path / "space")

    assert meta == {"generation": 8}
    assert (loaded.dim, loaded.metric, loaded.ann) == (index.dim, index.metric, index.ann)
    assert loaded.ann_params == index.ann_params is not None
    np.testing.assert_array_equal(loaded.ids(), index.ids())
    assert loaded.user_ids() == {5, 6}
    after = [loaded.search_global(q, 10) for q in queries] + [
        loaded.search_user(5, q, 10) for q in queries
    ]
    for (ids_a, scores_a), (ids_b, scores_b) in zip(before, after):
        np.testing.assert_array_equal(ids_a, ids_b)
        np.testing.assert_array_equal(scores_a, scores_b)
    assert len([p for p in (tmp_path / "space").iterdir() if p.name.startswith("snap-")]) == 1


def test_save_trains_the_ann_when_due(tmp_path: Path) -> None:
    rng = np.random.default_rng(13)
    index, _, _ = _ann_index(rng, n=1200)
    index.save(tmp_path, {})
    loaded, _ = VectorIndex.load(tmp_path)
    assert loaded.ann_params is not None and loaded.ann_params == index.ann_params


def test_save_load_empty_index(tmp_path: Path) -> None:
    VectorIndex(DIM, "l2").save(tmp_path, {})
    loaded, meta = VectorIndex.load(tmp_path)
    assert len(loaded) == 0 and loaded.metric == "l2" and meta == {}


def test_load_missing_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        VectorIndex.load(tmp_path / "nothing")


_GOOD_IDS = np.array([1000, 1001], dtype=np.int64)
_GOOD_USERS = np.array([1, CATALOG], dtype=np.int64)


@pytest.mark.parametrize(
    ("ids", "user_ids", "vectors", "message"),
    [
        (_GOOD_IDS, _GOOD_USERS, np.ones((2, DIM + 1)), "shape"),
        (_GOOD_IDS, _GOOD_USERS, np.ones(DIM), "shape"),
        (_GOOD_IDS, _GOOD_USERS[:1], np.ones((2, DIM)), "mismatched lengths"),
        (np.array([1000, 1000]), _GOOD_USERS, np.ones((2, DIM)), "duplicate ids"),
        (
            np.array([1000, 0]),
            _GOOD_USERS,
            np.ones((2, DIM)),
            "duplicate ids",
        ),  # 0 is already present
        (np.array([1000, -5]), _GOOD_USERS, np.ones((2, DIM)), "ids must be >= 0"),
        (np.array([1.5, 2.5]), _GOOD_USERS, np.ones((2, DIM)), "ids must be integers"),
        (_GOOD_IDS, np.array([1, -2]), np.ones((2, DIM)), "user_ids must be >= 0"),
        (_GOOD_IDS, _GOOD_USERS, np.array([[np.nan] * DIM, [1.0] * DIM]), "NaN or inf"),
        (_GOOD_IDS, _GOOD_USERS, np.array([[np.inf] * DIM, [1.0] * DIM]), "NaN or inf"),
    ],
)
def test_bad_add_raises_and_changes_nothing(ids, user_ids, vectors, message: str) -> None:
    rng = np.random.default_rng(11)
    index, _ = _users_and_catalog(rng)
    before_ids, before_users = index.ids(), index.user_ids()
    q = _normalised(rng, 1)[0]
    before_search = index.search_global(q, 5)[0]
    with pytest.raises(ValueError, match=message):
        index.add(ids, user_ids, vectors)
    np.testing.assert_array_equal(index.ids(), before_ids)
    assert index.user_ids() == before_users
    np.testing.assert_array_equal(index.search_global(q, 5)[0], before_search)


@pytest.mark.parametrize(
    ("query", "k", "message"),
    [
        (np.ones(DIM + 1), 5, "query must have shape"),
        (np.ones((2, DIM)), 5, "query must have shape"),
        (np.full(DIM, np.nan), 5, "NaN or inf"),
        (np.ones(DIM), 0, "k must be >= 1"),
    ],
)
def test_bad_query_raises(query: np.ndarray, k: int, message: str) -> None:
    index, _ = _users_and_catalog(np.random.default_rng(12))
    with pytest.raises(ValueError, match=message):
        index.search_user(1, query, k)
    with pytest.raises(ValueError, match=message):
        index.search_global(query, k)


def test_bad_construction_raises() -> None:
    with pytest.raises(ValueError, match="metric"):
        VectorIndex(DIM, "cosine")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dim"):
        VectorIndex(0)
    with pytest.raises(ValueError, match="nprobe"):
        AnnConfig(nprobe=0)


def test_auto_nlist_keeps_enough_training_points_per_list() -> None:
    config = AnnConfig()
    assert config.nlist_for(2000) == 2000 // 39
    assert config.nlist_for(1_000_000) == round(config.nlist_per_sqrt * 1000)
    assert AnnConfig(nlist=64).nlist_for(1000) == 1000 // 39


def test_catalog_vectors_are_read_by_id_and_unknown_ids_are_nan() -> None:
    index = VectorIndex(3)
    vectors = np.arange(12, dtype=np.float32).reshape(4, 3)
    index.add(np.array([7, 3, 9, 5]), np.array([CATALOG, CATALOG, CATALOG, 1]), vectors)
    found = index.catalog_vectors(np.array([9, 7, 5, 42]))
    np.testing.assert_array_equal(found[:2], vectors[[2, 0]])
    assert np.isnan(found[2]).all() and np.isnan(found[3]).all()  # a user's vector is not the catalog's
    index.remove(np.array([7]))
    assert np.isnan(index.catalog_vectors(np.array([7]))).all()
