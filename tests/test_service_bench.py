"""The service benchmark at quick size: the service in its own process on loopback, each figure
beside the same call in-process, and the over-HTTP results checked against the store."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def _bench_module():  # type: ignore[no-untyped-def]
    """unipgen.bench.service, imported when a test needs it (it imports torch)."""
    from unipgen.bench import service

    return service


def test_percentile_interpolates_between_ranks() -> None:
    percentile = _bench_module()._percentile
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([3.0], 99) == 3.0


def test_alternate_times_both_sides_and_gives_numbers_to_each_call() -> None:
    seen: dict[str, list[int]] = {"http": [], "local": []}
    found = _bench_module().alternate(seen["http"].append, seen["local"].append, rounds=3, per_round=4, warmup=1)
    assert found["ops_per_side"] == 12 and found["ratio"] > 0
    assert len(seen["http"]) == len(seen["local"]) == 13  # 1 warm-up + 12
    assert seen["http"] == seen["local"]  # the same requests both sides
    assert len(set(seen["http"])) == 13  # a number never twice on one side
    for side in ("http", "inprocess"):
        assert set(found[side]) == {"per_s", "p50_ms", "p99_ms", "mean_ms"}


@pytest.mark.slow
def test_service_bench_quick_reports_every_figure() -> None:
    result = _bench_module().run(quick=True)
    assert result["quick"] is True and result["machine"]["cores"] >= 1
    assert "separate process" in result["settings"]["server"]
    # every figure: both sides, positive numbers, p99 at least p50
    for name in ("ingest_one", "ingest_concurrent", "ingest_bulk", "context"):
        figure = result[name]
        assert figure["ratio"] > 0 and figure["ops_per_side"] > 0
        for side in ("http", "inprocess"):
            stats = figure[side]
            assert stats["per_s"] > 0 and stats["mean_ms"] > 0
            assert 0 < stats["p50_ms"] <= stats["p99_ms"]
    assert result["ingest_concurrent"]["threads"] == 8
    assert result["ingest_bulk_http_events_per_s"] > 0 and result["ingest_bulk_inprocess_events_per_s"] > 0
    assert result["health_http"]["per_s"] > 0 and result["authenticate_inprocess"]["per_s"] > 0
    for key in ("ingest_one_ratio", "ingest_one_http_per_s", "ingest_one_http_p99_ms", "ingest_one_inprocess_per_s",
                "ingest_concurrent_http_per_s", "ingest_bulk_ratio", "context_ratio", "context_http_per_s",
                "context_http_p99_ms", "context_inprocess_per_s"):
        assert result[key] > 0, key
    # a keep-alive request is not held back by Nagle + delayed ACK (about 40 ms each)
    assert result["health_http"]["p50_ms"] < 30
    # over HTTP, the results are right: every event written is in the store, exactly
    sizes = result["settings"]["sizes"]
    at_least = (sizes["ingest_one"]["rounds"] * sizes["ingest_one"]["per_round"]
                + 8 * sizes["ingest_concurrent"]["rounds"] * sizes["ingest_concurrent"]["per_thread"]
                + 1000 * sizes["ingest_bulk"]["rounds"])
    assert result["http_events_sent"] >= at_least
    assert result["http_events_in_store"] == result["http_events_sent"]
    assert result["http_events_all_stored"] is True and result["http_events_mismatched_users"] == []
    # and the contexts over HTTP have the same evidence (and provenance) as the in-process ones
    context = result["context"]
    assert context["same_evidence_keys"] is True and result["context_same_evidence_keys"] is True
    assert context["requests_compared"] == 48  # 8 users x 6 instructions, every one asked both ways
    assert context["evidence_items_compared"] > 0
