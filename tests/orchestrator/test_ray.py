"""The Ray executor on a real local cluster with two fake GPUs: placement, same bytes as inline,
batching across users, a worker killed mid-job, cancellation, loopback-only listeners."""

from __future__ import annotations

import os
import signal
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import SAMPLE
from unipgen.core.usermodel import UserModel
from unipgen.memory import MemoryStore
from unipgen.memory.loaders import load_movielens
from unipgen.orchestrator import InlineExecutor
from unipgen.schema.generation import GenerationOptions
from unipgen.schema.jobs import GenerateSpec, TrainSpec
from unipgen.schema.profiles import load_profile
from unipgen.settings import Settings

pytest.importorskip("ray")
pytest.importorskip("diffusers")
pytestmark = pytest.mark.slow

from unipgen.orchestrator.ray_cluster import connect
from unipgen.orchestrator.ray_executor import RayExecutor

TEXT = GenerateSpec(modality="text", instruction="Recommend me a film", options=GenerationOptions(max_new_tokens=8))
IMAGE = GenerateSpec(modality="image", instruction="a poster of a desert road", options=GenerationOptions(seed=3))


def placed_profile() -> Any:
    """The tiny profile with the text model on half a GPU and the image model on a whole one."""
    profile = load_profile("tiny")
    backends = dict(profile.backends)
    backends["text"] = backends["text"].model_copy(update={"options": {"num_gpus": 0.5, "max_wait_ms": 200}})
    backends["image"] = backends["image"].model_copy(update={"options": {"num_gpus": 1}})
    return profile.model_copy(update={"backends": backends})


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ray-home")


@pytest.fixture(scope="module")
def cluster(home: Path) -> Iterator[Any]:
    started = connect(home, num_cpus=2, num_gpus=2)
    yield started
    started.shutdown()


@pytest.fixture(scope="module")
def model(home: Path) -> Iterator[UserModel]:
    store = MemoryStore.open(Settings(home=home / "store"))
    load_movielens(store, "ml", SAMPLE, users=4)
    model = UserModel(store, placed_profile(), cache_dir=home / "cache")
    model.embed_missing("ml")
    yield model
    store.close()


@pytest.fixture(scope="module")
def executor(model: UserModel, cluster: Any) -> Iterator[RayExecutor]:
    runner = RayExecutor(model, cluster=cluster, lease_s=30, backoff_s=0.0, poll_s=0.2)
    yield runner
    runner.shutdown()


def blob_shas(model: UserModel, job: Any) -> list[str | None]:
    return [model.store.artifacts.artifact(job.tenant, key).blob_sha for key in job.result["artifacts"]]


def test_local_cluster_is_loopback_only_with_its_token_in_the_data_dir(cluster: Any, home: Path) -> None:
    import ray

    assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
    token = home / "ray" / "auth_token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and os.environ["RAY_AUTH_TOKEN_PATH"] == str(token)
    parent = Path(cluster.temp_dir).parent  # Ray makes its own folders 0777: this one keeps others out
    assert stat.S_IMODE(parent.stat().st_mode) == 0o700
    listening = _listening_addresses(_processes_of(cluster.temp_dir))
    assert listening and all(address in LOOPBACK for address in listening), listening


def test_actors_are_placed_on_their_gpu_share(executor: RayExecutor) -> None:
    import ray

    text, image = (ray.get(executor.actor(m).info.remote()) for m in ("text", "image"))
    assert len(text["gpu_ids"]) == 1 and len(image["gpu_ids"]) == 1
    assert text["gpu_ids"] != image["gpu_ids"]  # half a GPU and a whole one do not fit on one
    assert image["cuda_visible_devices"] == image["gpu_ids"][0]


def test_ray_and_inline_give_the_same_bytes(executor: RayExecutor, model: UserModel) -> None:
    inline = InlineExecutor(model)
    for spec in (TEXT, IMAGE):
        on_ray = executor.wait("ml", executor.submit("ml", "2", spec).key)
        here = inline.wait("ml", inline.submit("ml", "2", spec).key)
        assert on_ray.status == here.status == "succeeded"
        assert blob_shas(model, on_ray) == blob_shas(model, here)


def test_a_multi_modal_post_on_ray_is_the_post_inline_makes(executor: RayExecutor, model: UserModel) -> None:
    """Each part on its model actor, the caption in the driver: the same bytes, caption and group shape."""
    spec = GenerateSpec(modality="text,image", instruction="my film night", options=GenerationOptions(seed=4, steps=1))
    on_ray = executor.wait("ml", executor.submit("ml", "2", spec).key)
    inline = InlineExecutor(model)
    here = inline.wait("ml", inline.submit("ml", "2", spec).key)
    assert on_ray.status == here.status == "succeeded", on_ray.error
    assert blob_shas(model, on_ray) == blob_shas(model, here)
    assert on_ray.result["caption"] == here.result["caption"] and on_ray.result["plans"] == here.result["plans"]
    group = model.store.artifacts.artifact("ml", on_ray.result["group"])
    assert sorted(group.derived_from) == sorted(("artifact", key) for key in on_ray.result["artifacts"])


def test_a_fit_runs_on_ray_as_the_inline_executor_runs_it(executor: RayExecutor, model: UserModel) -> None:
    from unipgen.schema.jobs import FitSpec

    job = executor.wait("ml", executor.submit("ml", None, FitSpec(config={"dim": 2}), key="fit-on-ray").key)
    assert job.status == "succeeded" and job.user is None and job.result["stats"]["users"] == 4
    ray_vectors = model.store.content.vectors("ml", "behavior", "item")
    inline = InlineExecutor(model)
    assert inline.wait("ml", inline.submit("ml", None, FitSpec(config={"dim": 2})).key).status == "succeeded"
    here = model.store.content.vectors("ml", "behavior", "item")
    assert sorted(ray_vectors) == sorted(here)
    assert all(np.array_equal(ray_vectors[key], here[key]) for key in here)  # the same fit, wherever it ran
    assert [f.generation for f in model.store.fits.fits("ml")][:2] == [2, 1]


def test_best_of_on_ray_sends_the_candidates_as_one_batch_and_keeps_what_inline_keeps(
        executor: RayExecutor, model: UserModel) -> None:
    import ray

    spec = TEXT.model_copy(update={"options": TEXT.options.model_copy(update={"seed": 11, "best_of": 3})})
    before = len(ray.get(executor.actor("text").info.remote())["batches"])
    on_ray = executor.wait("ml", executor.submit("ml", "2", spec, key="best-of-ray").key)
    inline = InlineExecutor(model)
    here = inline.wait("ml", inline.submit("ml", "2", spec, key="best-of-inline").key)
    assert on_ray.status == here.status == "succeeded"
    assert blob_shas(model, on_ray) == blob_shas(model, here)
    scores = [model.store.artifacts.artifact("ml", job.result["artifacts"][0]).meta["best_of"]["scores"] for job in (on_ray, here)]
    assert scores[0] == scores[1] and len(scores[0]) == 3
    assert ray.get(executor.actor("text").info.remote())["batches"][before:] == [3]  # one burst, one batch


def test_requests_of_different_users_are_batched(executor: RayExecutor, model: UserModel) -> None:
    import ray

    keys = [executor.submit("ml", user, TEXT, key=f"batch-{user}-{n}").key for user in ("1", "2", "3") for n in (0, 1)]
    done = executor.run_pending()
    assert {job.key for job in done} == set(keys) and {job.status for job in done} == {"succeeded"}
    assert max(ray.get(executor.actor("text").info.remote())["batches"]) > 1


@pytest.mark.parametrize("kill", ["ray.kill", "SIGKILL"])
def test_a_worker_killed_mid_job_is_retried_and_nothing_is_lost_or_duplicated(
        executor: RayExecutor, model: UserModel, kill: str) -> None:
    import ray

    actor = executor.actor("image")
    slow = GenerateSpec(modality="image", instruction="a lighthouse at dusk",
                        options=GenerationOptions(seed=5, steps=200))
    job = executor.submit("ml", "2", slow, key=f"killed-{kill}")
    finished: list[Any] = []
    runner = threading.Thread(target=lambda: finished.append(executor.wait("ml", job.key)))
    runner.start()
    while not ray.get(actor.info.remote())["running"]:  # wait until it is inside the diffusion loop
        time.sleep(0.05)
    if kill == "SIGKILL":
        os.kill(ray.get(actor.info.remote())["pid"], signal.SIGKILL)
    else:
        ray.kill(actor, no_restart=False)
    runner.join(timeout=180)
    [done] = finished
    assert done.status == "succeeded", done.error
    assert done.attempts == 2 and "Actor" in done.error["message"]
    made = [a.key for a in model.store.artifacts.artifacts("ml", "2") if (a.meta or {}).get("job") == job.key]
    assert made == done.result["artifacts"] and len(made) == 1


def test_training_on_ray_reports_progress_and_stops_when_cancelled(executor: RayExecutor, model: UserModel) -> None:
    job = executor.submit("ml", "2", TrainSpec(method="text-lora", steps=10_000), key="ray-train-cancel")
    finished: list[Any] = []
    runner = threading.Thread(target=lambda: finished.append(executor.wait("ml", job.key)))
    runner.start()
    while model.store.jobs.job("ml", job.key).progress == 0.0:  # the task's steps reach the job's progress
        time.sleep(0.05)
    executor.cancel("ml", job.key)
    runner.join(timeout=60)
    assert finished and finished[0].status == "cancelled" and 0 < finished[0].progress < 0.5
    assert not [a for a in model.store.artifacts.artifacts("ml", "2") if (a.meta or {}).get("job") == job.key]


def test_a_protection_on_ray_stores_the_copies_inline_makes(cluster: Any, tmp_path: Path) -> None:
    """A protect job runs as a Ray task (the tiny profile: no GPU share to wait for) and stores
    the same protected bytes, with the same lineage, as the inline executor."""
    from tests.helpers import photo_png
    from unipgen.schema.jobs import ProtectSpec

    quick = ProtectSpec(subject="rex", rounds=1, pgd_steps=1, surrogate_steps=0, step_size=4.0)
    with MemoryStore.open(Settings(home=tmp_path / "store")) as store:
        store.users.create_tenant("t")
        for user in ("ann", "bob"):
            store.users.create_user("t", user)
            store.content.add_subject("t", user, "rex", name="Rex", class_noun="dog", images=[photo_png(11, (64, 48))])
        model = UserModel(store, "tiny", cache_dir=tmp_path / "cache")
        # Not shut down: this module's cluster was started here, so `shutdown` would stop it
        # under the other tests; the `cluster` fixture stops it, and all on it, at the end.
        runner = RayExecutor(model, cluster=cluster, lease_s=30, backoff_s=0.0, poll_s=0.2)
        on_ray = runner.wait("t", runner.submit("t", "ann", quick).key)
        here = InlineExecutor(model).wait("t", InlineExecutor(model).submit("t", "bob", quick).key)
        assert on_ray.status == here.status == "succeeded", (on_ray.error, here.error)
        [ray_copy], [inline_copy] = ([store.artifacts.artifact("t", key) for key in job.result["artifacts"]]
                                     for job in (on_ray, here))
        assert ray_copy.blob_sha == inline_copy.blob_sha
        assert ray_copy.kind == inline_copy.kind == "protected" and ray_copy.derived_from == [("subject", "rex")]


# -- which addresses the cluster's processes listen on (from /proc, no extra packages) ------------

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def _processes_of(temp_dir: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if temp_dir.encode() in (entry / "cmdline").read_bytes() or int(entry.name) == os.getpid():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _listening_addresses(pids: list[int]) -> set[str]:
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table, parse in (("tcp", _ipv4), ("tcp6", _ipv6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.add(parse(fields[1].split(":")[0]))
    return found


def _ipv4(hex_address: str) -> str:
    return ".".join(str(int(hex_address[i: i + 2], 16)) for i in (6, 4, 2, 0))


def _ipv6(hex_address: str) -> str:
    import ipaddress

    words = [hex_address[i: i + 8] for i in range(0, 32, 8)]
    raw = b"".join(bytes.fromhex(word)[::-1] for word in words)
    address = ipaddress.IPv6Address(raw)
    return f"::ffff:{address.ipv4_mapped}" if address.ipv4_mapped else str(address)


def test_generate_from_the_command_line_on_ray(tmp_path: Path) -> None:
    """`unipgen generate --executor ray` starts its own local cluster, runs the job, stops it."""
    from tests.cli.test_cli import as_json, run

    run(tmp_path, "ingest", "movielens", str(SAMPLE), "--users", "2")
    made = as_json(run(tmp_path, "generate", "2", "-i", "Recommend a film", "--executor", "ray", "--json"))
    assert made["status"] == "succeeded" and len(made["artifacts"]) == 1
    assert (tmp_path / "ray" / "auth_token").is_file()  # UNIPGEN_HOME=tmp_path in `run`


def test_the_service_runs_its_jobs_on_ray(cluster: Any, tmp_path: Path) -> None:
    """`unipgen serve` with UNIPGEN_EXECUTOR=ray: the same routes, the work on the cluster."""
    pytest.importorskip("fastapi")
    from tests.api.conftest import ADMIN_KEY, live_service
    from unipgen.client import Client

    settings = Settings(home=tmp_path / "service", executor="ray", admin_key=ADMIN_KEY)
    with live_service(settings) as (url, _), Client(url, api_key=ADMIN_KEY) as admin:
        admin.create_tenant("t")
        with Client(url, api_key=admin.create_api_key("t", "k").key, timeout=300) as api:
            assert api.health().executor == "ray"
            api.add_items([{"key": "m1", "text": "Heat (1995) crime thriller"}])
            api.create_user("u")
            job = api.wait(api.generate("u", "text", "hello", options={"max_new_tokens": 3}).key, timeout=300)
            assert job.status == "succeeded" and job.worker.startswith("ray-")
            assert api.artifact_content(job.result["artifacts"][0])[0]
