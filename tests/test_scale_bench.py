"""`unipgen bench scale` runs end to end on PostgreSQL + S3 (moto) beside the embedded default."""

from __future__ import annotations

import pytest

from tests.conftest import postgres_url

pytestmark = [pytest.mark.scale, pytest.mark.postgres, pytest.mark.slow]


def test_quick_scale_bench_measures_every_configuration(s3) -> None:
    from unipgen.bench.scale import run

    url = postgres_url()
    if not url:
        pytest.skip("set UNIPGEN_TEST_POSTGRES_URL: the scale path needs PostgreSQL (CI has it)")
    result = run(quick=True, postgres=url, blob_url=s3.blob_url("bench"), processes=(2,))
    embedded, scale = result["rows"]
    assert (embedded["configuration"], embedded["processes"]) == ("embedded", 1)
    assert (scale["configuration"], scale["processes"]) == ("scale", 2)
    for row in result["rows"]:
        assert row["ingest_events_per_s"] > 0 and row["jobs_per_s"] > 0
        assert 0 < row["context_p50_ms"] <= row["context_p99_ms"]
        assert sum(row["jobs_by_worker"]) == result["sizes"]["jobs"]  # each job ran once, by some worker
    assert embedded["ratio_to_embedded"]["jobs_per_s"] == 1.0
    events = result["postgres_storage"]["behavior_events"]
    # The sample's ratings plus what each configuration's ingest wrote to PostgreSQL (2 processes).
    assert events["rows"] >= result["sizes"]["events"] and events["bytes_per_row"] > 0
