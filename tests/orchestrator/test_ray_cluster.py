"""unipgen's jobs on a real multi-node Ray cluster: two nodes started with `ray start` on
loopback (the session's `ray_cluster`), joined through `UNIPGEN_RAY_ADDRESS` by this process and
by a `unipgen worker` process.

- jobs land on both nodes, each output saying which (`meta["ray"]["node_id"]`);
- two drivers share one model actor per model and placement, which outlives the driver that
  made it;
- a node's raylet killed with SIGKILL in the middle of a job: the job is done once, on the
  node that replaces it, with one stored output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RAY_NODE, SAMPLE
from tests.orchestrator.test_ray import LOOPBACK, _listening_addresses
from tests.raycluster import REPO, LoopbackCluster
from unipgen.core.usermodel import UserModel
from unipgen.errors import InvalidInputError
from unipgen.memory import MemoryStore
from unipgen.memory.loaders import load_movielens
from unipgen.schema.generation import GenerationOptions
from unipgen.schema.jobs import GenerateSpec
from unipgen.schema.profiles import load_profile
from unipgen.settings import Settings

pytest.importorskip("ray")
pytest.importorskip("diffusers")
pytestmark = pytest.mark.scale

from unipgen.orchestrator.ray_executor import ACTOR_NAMESPACE, RayExecutor, actor_name

TENANT = "ml"
TEXT = GenerateSpec(modality="text", instruction="Recommend me a film", options=GenerationOptions(max_new_tokens=6))
IMAGE = GenerateSpec(modality="image", instruction="a poster of a desert road", options=GenerationOptions(seed=3))
#: The tiny profile with its text model pinned to the head (`pool_a`) and its image model to the
#: other node (`pool_b`), each on a whole GPU: both nodes hold a model.
PLACEMENT = {"text": '{ num_gpus = 1, resources = { pool_a = 1 }, max_wait_ms = 50 }',
             "image": '{ num_gpus = 1, resources = { pool_b = 1 } }'}


def write_profile(path: Path) -> Path:
    text = (REPO / "unipgen" / "profiles" / "tiny.toml").read_text().replace('name = "tiny"', 'name = "tiny-cluster"')
    for modality, options in PLACEMENT.items():
        section = f'[backends.{modality}]\n'
        start = text.index(section)
        end = text.index("\n\n", start)
        text = text[:end] + f"\noptions = {options}" + text[end:]
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ray-cluster-home")


@pytest.fixture(scope="module")
def profile_file(home: Path) -> Path:
    return write_profile(home / "tiny-cluster.toml")


@pytest.fixture(scope="module")
def model(home: Path, profile_file: Path) -> Iterator[UserModel]:
    store = MemoryStore.open(Settings(home=home))
    load_movielens(store, TENANT, SAMPLE, users=4)
    model = UserModel(store, load_profile(profile_file), cache_dir=home / "cache")
    model.embed_missing(TENANT)
    yield model
    store.close()


@pytest.fixture(scope="module")
def driver(ray_cluster: LoopbackCluster, model: UserModel) -> Iterator[RayExecutor]:
    """This process as a driver of the cluster, joined as `unipgen worker` joins it: by address,
    with the token in its environment."""
    import ray

    if ray.is_initialized():  # another module's cluster: never reuse it
        ray.shutdown()
    saved = {name: os.environ.get(name) for name in ray_cluster.env}
    os.environ.update(ray_cluster.env)
    runner = RayExecutor(model, address=Settings().ray_address, lease_s=30, backoff_s=0.0, poll_s=0.2)
    yield runner
    runner.shutdown(stop_actors=True)  # the cluster goes on serving other tests: free its GPUs
    ray.shutdown()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def made_by(model: UserModel, job: Any) -> list[dict[str, Any]]:
    """Where each output of `job` was made (its artifacts' `meta["ray"]`)."""
    return [model.store.artifacts.artifact(TENANT, key).meta["ray"] for key in job.result["artifacts"]]


def test_the_cluster_is_two_loopback_nodes_each_with_its_resources(
        ray_cluster: LoopbackCluster, driver: RayExecutor) -> None:
    import ray

    nodes = {node["NodeID"]: node for node in ray.nodes() if node["Alive"]}
    assert set(nodes) == {node.node_id for node in ray_cluster.nodes} and len(nodes) == 2
    assert {node["NodeManagerAddress"] for node in nodes.values()} == {"127.0.0.1"}
    assert sorted((nodes[n.node_id]["Resources"]["GPU"], n.head) for n in ray_cluster.nodes) == [(1, False), (1, True)]
    assert nodes[ray_cluster.head.node_id]["Resources"]["pool_a"] == 1
    listening = _listening_addresses(ray_cluster.processes())
    assert listening and listening <= LOOPBACK, listening


def test_drivers_with_the_token_share_one_actor_per_model_which_outlives_the_driver_that_made_it(
        ray_cluster: LoopbackCluster, driver: RayExecutor, model: UserModel, home: Path, profile_file: Path) -> None:
    import ray

    queued = [driver.submit(TENANT, "1", spec, key=f"worker-{spec.modality}").key for spec in (TEXT, IMAGE)]
    env = {**os.environ, **ray_cluster.env, "UNIPGEN_HOME": str(home)}
    stranger = subprocess.Popen(  # a driver with another token (Ray retries for ~20 s, meanwhile the worker runs)
        [sys.executable, "-c", f"import ray; ray.init(address={ray_cluster.address!r})"], stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, env={**env, "RAY_AUTH_TOKEN_PATH": "", "RAY_AUTH_TOKEN": "0" * 64})
    done = subprocess.run([sys.executable, "-m", "unipgen.cli", "worker", "--once", "--profile", str(profile_file),
                           "--json"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    refused = stranger.communicate(timeout=120)[1]
    assert stranger.returncode != 0 and "InvalidAuthToken" in refused, refused[-2000:]
    ran = json.loads(done.stdout)["jobs"]
    assert sorted(job["key"] for job in ran) == sorted(queued) and {job["status"] for job in ran} == {"succeeded"}
    # The worker made the actors and exited; they are detached, so they still serve, here, as the same actors.
    by_worker = {key: made_by(model, model.store.jobs.job(TENANT, key))[0] for key in queued}
    here = {spec.modality: driver.wait(TENANT, driver.submit(TENANT, "2", spec).key) for spec in (TEXT, IMAGE)}
    for modality, job in here.items():
        assert job.status == "succeeded", job.error
        assert made_by(model, job)[0] == by_worker[f"worker-{modality}"]  # same node, same actor
    names = {modality: actor_name(modality, model.profile.backends[modality], model.store.blobs.url)
             for modality in ("text", "image")}
    ours = [actor for actor in ray.util.list_named_actors(all_namespaces=True)
            if actor["namespace"] == ACTOR_NAMESPACE and actor["name"] in names.values()]
    assert sorted(actor["name"] for actor in ours) == sorted(names.values())
    for modality, name in names.items():  # found by name, alive, the very actor the exited worker made
        info = ray.get(ray.get_actor(name, namespace=ACTOR_NAMESPACE).info.remote())
        assert info["actor_id"] == by_worker[f"worker-{modality}"]["actor_id"]
    assert ray.available_resources().get("GPU", 0) == 0  # the two GPUs: these two actors, and no third


def test_jobs_land_on_both_nodes(ray_cluster: LoopbackCluster, driver: RayExecutor, model: UserModel) -> None:
    keys = [driver.submit(TENANT, user, spec, key=f"spread-{spec.modality}-{user}").key
            for user in ("1", "2", "3") for spec in (TEXT, IMAGE)]
    done = {job.key: job for job in driver.run_pending()}
    assert set(done) == set(keys) and {job.status for job in done.values()} == {"succeeded"}
    nodes = {key: {where["node_id"] for where in made_by(model, job)} for key, job in done.items()}
    head, other = ray_cluster.head.node_id, next(n.node_id for n in ray_cluster.nodes if not n.head)
    assert {key: node for key, node in nodes.items() if "text" in key} == {k: {head} for k in keys if "text" in k}
    assert {key: node for key, node in nodes.items() if "image" in key} == {k: {other} for k in keys if "image" in k}


def test_actor_names_follow_the_model_and_placement_and_bad_resources_are_refused(
        driver: RayExecutor, model: UserModel) -> None:
    import ray

    image, url = model.profile.backends["image"], model.store.blobs.url
    elsewhere = image.model_copy(update={"options": {**image.options, "resources": {"pool_a": 1}}})
    assert actor_name("image", image, url) == actor_name("image", image.model_copy(), url)
    assert len({actor_name("image", image, url), actor_name("image", elsewhere, url),
                actor_name("image", image, url + "-other"), actor_name("text", image, url)}) == 4
    bad = image.model_copy(update={"options": {**image.options, "resources": {"pool_b": "one"}}})
    profile = model.profile.model_copy(update={"backends": {**model.profile.backends, "image": bad}})
    executor = RayExecutor(UserModel(model.store, profile), cluster=driver.cluster)
    with pytest.raises(InvalidInputError, match="resources"):
        executor.actor("image")
    named = {actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)}
    assert actor_name("image", bad, url) not in named


def test_a_node_killed_mid_job_ends_with_the_job_done_once_on_its_replacement(
        ray_cluster: LoopbackCluster, driver: RayExecutor, model: UserModel) -> None:
    import ray

    lost = next(node for node in ray_cluster.nodes if not node.head)
    actor = driver.actor("image")
    assert ray.get(actor.info.remote())["node_id"] == lost.node_id
    slow = GenerateSpec(modality="image", instruction="a lighthouse at dusk", options=GenerationOptions(seed=5, steps=40))
    job = driver.submit(TENANT, "3", slow, key="node-lost")
    finished: list[Any] = []
    runner = threading.Thread(target=lambda: finished.append(driver.wait(TENANT, job.key)))
    runner.start()
    deadline = time.monotonic() + 180
    while not ray.get(actor.info.remote())["running"]:  # inside the diffusion loop, on the node to lose
        assert time.monotonic() < deadline and runner.is_alive(), finished
        time.sleep(0.05)
    ray_cluster.kill_raylet(lost)
    replacement = ray_cluster.add_node(**RAY_NODE)  # the pool's node comes back (as an autoscaler would)
    runner.join(timeout=240)
    [done] = finished
    assert done.status == "succeeded", done.error
    # The first attempt's call failed once the head noticed the lost node (ActorUnavailableError: "may or
    # may not have been executed"); the driver waited for the actor to be back, on the new node, and
    # the job queue ran the job once more there. What the first attempt may have made was never stored.
    assert done.attempts == 2 and "Actor" in done.error["message"], done.error
    assert [where["node_id"] for where in made_by(model, done)] == [replacement.node_id]
    made = [a.key for a in model.store.artifacts.artifacts(TENANT, "3") if (a.meta or {}).get("job") == job.key]
    assert made == done.result["artifacts"] and len(made) == 1
    # The job table and the stored outputs agree for every job of the module: one output each.
    jobs = model.store.jobs.jobs(TENANT)
    assert {j.status for j in jobs} == {"succeeded"}
    outputs = [a for user in ("1", "2", "3") for a in model.store.artifacts.artifacts(TENANT, user, "output")]
    assert sorted(a.key for a in outputs) == sorted(key for j in jobs for key in j.result["artifacts"])
    assert all(len(j.result["artifacts"]) == 1 for j in jobs)
