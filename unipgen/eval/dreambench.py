"""DreamBench: the DreamBooth evaluation protocol (Ruiz et al. 2023) run through unipgen's own path.

Each subject folder of a DreamBench-layout folder (reference photos, plus `prompts_and_classes.txt`
giving each subject's class noun and the 25 object and 25 live-subject prompts) is loaded into a
MemoryStore as one user holding that subject (`load_dreambench`). Per method, the subject is
personalized (IP-Adapter: tuning-free on its photos; LoRA / textual inversion: trained with
`unipgen.orchestrator.training.train`), and images are generated through `InlineGenerator` from
"my <class noun> ..." instructions, so the router picks the subject and the method as it would for
any user (the harness checks the plan's method). A baseline generates the class-noun prompt for a
user without subjects (plan `prompt_only`).

Scores (`unipgen.eval.image_metrics`), each a mean cosine in [-1, 1]:
- DINO-I: generated vs the subject's real photos, DINO ViT-S/16 CLS features (subject fidelity);
- CLIP-I: the same with the profile's CLIP image encoder (subject fidelity);
- CLIP-T: generated image vs its prompt with the subject token replaced by the class noun, e.g.
  "a dog in the jungle" (text alignment).
Personalization should raise DINO-I and CLIP-I over the baseline; CLIP-T is what it may cost.
"Real images" scores distinct pairs of a subject's own photos: the ceiling for subject fidelity.
Each figure's kind (`result["score_kinds"]`, `unipgen.tiny.score_kind` of the generator and the
scoring encoder) is a mechanical check when either has random weights (the tiny profile's): it
checks the harness, not a method, and the report says so beside the figures.
"""

from __future__ import annotations

import io
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.eval.environment import machine, shared_data_dir, shown_data_path
from unipgen.tiny import MECHANICAL, MECHANICAL_NOTE, score_kind

#: CLI method name → (plan method the router must choose, training method or None).
METHODS = {"ip-adapter": ("ip_adapter", None), "lora": ("lora", "lora"),
           "textual-inversion": ("textual_inversion", "textual-inversion")}
#: DreamBench's live subjects are its cats and dogs; they get the live-subject prompt list.
LIVE_CLASSES = frozenset({"cat", "dog"})
#: DreamBooth (Ruiz et al. 2023), Table 1: scores on DreamBench.
PUBLISHED: dict[str, dict[str, float | None]] = {
    "DreamBooth (Stable Diffusion)": {"dino_i": 0.668, "clip_i": 0.803, "clip_t": 0.305},
    "DreamBooth (Imagen)": {"dino_i": 0.696, "clip_i": 0.812, "clip_t": 0.306},
    "Textual Inversion (Stable Diffusion)": {"dino_i": 0.569, "clip_i": 0.780, "clip_t": 0.255},
    "Real images": {"dino_i": 0.774, "clip_i": 0.885, "clip_t": None},
}


class Defaults(TypedDict):
    """A run's sizes unless given: `QUICK` or `FULL`."""

    subjects: int | None  # None: every subject
    prompts: int
    images_per_prompt: int
    methods: tuple[str, ...]
    train_steps: int


QUICK: Defaults = {"subjects": 2, "prompts": 2, "images_per_prompt": 1, "methods": ("ip-adapter", "lora"),
                   "train_steps": 4}
FULL: Defaults = {"subjects": None, "prompts": 25, "images_per_prompt": 4, "methods": ("ip-adapter",),
                  "train_steps": 200}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
#: The figures' names in the report.
HEADERS = {"dino_i": "DINO-I", "clip_i": "CLIP-I", "clip_t": "CLIP-T"}
_PROMPT_LINE = re.compile(r"""^\s*(['"])(.*)\1\s*\.format\(""")


# ---------------------------------------------------------------- the data set


def dreambench_prompts(directory: Path) -> tuple[list[str], list[str]]:
    """(object prompts, live-subject prompts) of prompts_and_classes.txt, as "{0}"/"{1}" templates."""
    path = directory / "prompts_and_classes.txt"
    if not path.is_file():
        raise InvalidInputError(f"{path} not found: expected the DreamBench layout (one folder per subject)")
    lists: dict[str, list[str]] = {"object": [], "live": []}
    section = None
    for line in path.read_text(encoding="utf-8").splitlines():
        lowered = line.strip().lower()
        if lowered.startswith("object prompts"):
            section = "object"
        elif lowered.startswith("live subject prompts"):
            section = "live"
        elif section and (match := _PROMPT_LINE.match(line)):
            lists[section].append(match.group(2))
    for name, prompts in lists.items():
        if not prompts:
            raise InvalidInputError(f"{path}: no {name} prompts (expected an '{name.title()} ... Prompts' section "
                                    "of lines like 'a {0} {1} in the snow'.format(unique_token, class_token),)")
    return lists["object"], lists["live"]


def class_prompt(template: str, class_noun: str) -> str:
    """The prompt CLIP-T scores against: the subject token dropped, the class noun kept ("a dog in the snow")."""
    return " ".join(template.format("", class_noun).split())


def personal_instruction(template: str, class_noun: str) -> str:
    """What a user would ask, naming "my <class noun>" as the router expects: "a {0} {1} in the snow"
    → "my dog in the snow"; "a red {0} {1}" → "a red version of my dog"."""
    text = " ".join(template.format("my", class_noun).split())
    match = re.match(r"^an?\s+(.*?)\s*\bmy\s+(.*)$", text)
    if not match:
        return text
    modifiers, rest = match.groups()
    return f"a {modifiers} version of my {rest}" if modifiers else f"my {rest}"


def reference_images(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix.lower() in _IMAGE_SUFFIXES]


def pick_subjects(directory: Path, classes: dict[str, str], count: int | Sequence[str] | None) -> list[str]:
    """Subject folders to evaluate: all, the first `count` (objects and live subjects alternating), or by name."""
    present = sorted(p.name for p in directory.iterdir() if p.is_dir() and p.name in classes and reference_images(p))
    if not present:
        raise InvalidInputError(f"{directory}: no subject folder with images among {sorted(classes)[:5]}...")
    if count is None:
        return present
    if not isinstance(count, int):
        missing = [name for name in count if name not in present]
        if missing:
            raise NotFoundError(f"{directory}: no subject folder with images for {missing}")
        return list(count)
    if count < 1:
        raise InvalidInputError(f"subjects must be >= 1, got {count}")
    objects = [s for s in present if classes[s] not in LIVE_CLASSES]
    live = [s for s in present if classes[s] in LIVE_CLASSES]
    mixed = [s for pair in zip(objects, live, strict=False) for s in pair]
    return (mixed + [s for s in present if s not in mixed])[:count]


# ---------------------------------------------------------------- scoring


def _pairwise_distinct(vectors: np.ndarray) -> float | None:
    """Mean cosine over distinct pairs of rows (the "real images" score); None for < 2 rows."""
    if len(vectors) < 2:
        return None
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = unit @ unit.T
    return float((sims.sum() - np.trace(sims)) / (len(vectors) * (len(vectors) - 1)))


def _mean(rows: Sequence[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def _means(per_subject: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    rows = list(per_subject.values())
    return {k: _mean(rows, k) for k in ("dino_i", "clip_i", "clip_t")}


# ---------------------------------------------------------------- the run


def run_dreambench(data: Path | str | None = None, *, profile: str = "tiny", methods: str | Sequence[str] | None = None,
                   quick: bool = False, out: Path | str | None = None, subjects: int | Sequence[str] | None = None,
                   prompts: int | None = None, images_per_prompt: int | None = None, steps: int | None = None,
                   train_steps: int | None = None, seed: int = 0, dino: str | None = None, home: Path | None = None,
                   log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the protocol on `data` (default: the shared DreamBench) and write the report into `out`.

    `quick`: 2 subjects (an object and a live one), 2 prompts, 1 image each, ip-adapter and a
    4-step LoRA (a harness check). Otherwise every subject, 25 prompts, 4 images per prompt
    (the paper's protocol), ip-adapter. Explicit arguments override either. `steps`: diffusion
    steps (None: the profile's); `train_steps`: LoRA / textual-inversion steps. `dino`: the
    DINO model (default "tiny-random" on the tiny profile, else facebook/dino-vits16 from the
    local Hugging Face cache). `out`: the report folder (default: a new temporary folder);
    `home`: the store's home (default: a temporary one, deleted at the end). Returns the result
    that `<out>/dreambench.json` holds.
    """
    started = time.perf_counter()
    say = log or (lambda _message: None)
    defaults = QUICK if quick else FULL
    directory = Path(data) if data is not None else shared_data_dir() / "dreambench"
    if not directory.is_dir():
        raise NotFoundError(f"DreamBench folder {directory} not found (pass data=, or set UNIPGEN_SHARED_DATA)")
    from unipgen.memory.loaders import dreambench_classes

    classes = dreambench_classes(directory)
    object_prompts, live_prompts = dreambench_prompts(directory)
    chosen = pick_subjects(directory, classes, subjects if subjects is not None else defaults["subjects"])
    wanted = [methods] if isinstance(methods, str) else list(methods or defaults["methods"])
    unknown = [m for m in wanted if m not in METHODS]
    if unknown or not wanted:
        raise InvalidInputError(f"unknown method(s) {unknown}; available: {list(METHODS)}")
    count = prompts if prompts is not None else defaults["prompts"]
    per_prompt = images_per_prompt if images_per_prompt is not None else defaults["images_per_prompt"]
    if count < 1 or per_prompt < 1:
        raise InvalidInputError(f"prompts and images_per_prompt must be >= 1, got {count} and {per_prompt}")
    settings = {"data": shown_data_path(directory), "profile": profile, "methods": wanted, "quick": quick, "subjects": chosen,
                "prompts_per_subject": min(count, len(object_prompts), len(live_prompts)),
                "images_per_prompt": per_prompt, "diffusion_steps": steps, "seed": seed,
                "train_steps": train_steps if train_steps is not None else defaults["train_steps"],
                "dino": dino or ("tiny-random" if profile == "tiny" else None),
                "clip": f"the {profile!r} profile's image encoder", "clip_t_prompt": "class noun, subject token dropped"}
    out_dir = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="unipgen-dreambench-"))
    with ExitStack() as stack:
        store_home = home or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="unipgen-dreambench-home-")))
        scored = _evaluate(stack, Path(store_home), directory, classes, chosen, (object_prompts[:count], live_prompts[:count]),
                           settings, out_dir, say)
    settings["dino"] = scored.pop("dino_ref")
    result = {"benchmark": "dreambench", "protocol": "DreamBooth (Ruiz et al. 2023): DINO-I, CLIP-I, CLIP-T",
              "settings": settings, "machine": machine("torch", "diffusers", "transformers"), **scored,
              "published": {"source": "Ruiz et al. 2023, DreamBooth, Table 1 (DreamBench, 30 subjects)",
                            **PUBLISHED},
              "seconds": round(time.perf_counter() - started, 2)}
    result["report"] = write_dreambench_report(out_dir, result)
    say(f"report: {result['report']['html']}")
    return result


def _evaluate(stack: ExitStack, home: Path, directory: Path, classes: dict[str, str], chosen: list[str],
              prompt_lists: tuple[list[str], list[str]], settings: dict[str, Any], out_dir: Path,
              say: Callable[[str], None]) -> dict[str, Any]:
    """Load, personalize, generate and score; returns the result's scores and samples."""
    from unipgen.core.usermodel import UserModel
    from unipgen.eval import image_metrics as metrics
    from unipgen.memory import MemoryStore
    from unipgen.memory.loaders import load_dreambench
    from unipgen.orchestrator import InlineGenerator, train
    from unipgen.schema.generation import GenerationOptions
    from unipgen.settings import Settings

    profile, seed, per_prompt = settings["profile"], settings["seed"], settings["images_per_prompt"]
    store = stack.enter_context(MemoryStore.open(Settings(home=home)))
    model = UserModel(store, profile, cache_dir=home / "dreambench-cache")
    generator = InlineGenerator(model)
    spec = model.profile.backends.get("image")
    if spec is None:
        raise NotFoundError(f"profile {model.profile.name!r} has no image generator")
    steps = settings["diffusion_steps"]
    settings["diffusion_steps"] = steps or spec.options.get("steps", "the backend's default")
    run = uuid.uuid4().hex[:8]  # tenants of this run: a given home may hold an earlier run's adapters
    clip = metrics.resolve_encoder(profile)
    dino_ref = settings["dino"] or metrics.DINO_REF
    dino = metrics.DinoEncoder(dino_ref)
    try:
        dino.encode([reference_images(directory / chosen[0])[0]])
    except OSError as exc:
        raise NotFoundError(f"DINO model {dino_ref!r} is not available here ({exc}); pass dino='tiny-random' "
                            "or a local folder") from None

    def generate(tenant: str, user: str, instruction: str, index: int, expected: str) -> list[bytes]:
        options = GenerationOptions(seed=seed + index, num_outputs=per_prompt, steps=steps)
        made = generator.generate(tenant, user, "image", instruction, options)
        if made[0].plan.method != expected:  # the router must serve the method under test
            raise InvalidInputError(f"{tenant}/{user}: {instruction!r} was routed to {made[0].plan.method!r}, not "
                                    f"{expected!r} ({'; '.join(made[0].plan.reasons)})")
        return [store.artifacts.artifact_blob(tenant, a.key)[0] for a in made]

    def score(images: list[bytes], refs: list[bytes], texts: list[str]) -> dict[str, Any]:
        return {"dino_i": metrics.dino_i(images, refs, dino), "clip_i": metrics.clip_i(images, refs, clip),
                "clip_t": metrics.clip_t(images, texts, clip), "images": len(images)}

    refs = {s: reference_images(directory / s) for s in chosen}
    templates = {s: prompt_lists[1] if classes[s] in LIVE_CLASSES else prompt_lists[0] for s in chosen}
    store.users.ensure_tenant(baseline_tenant := f"dreambench-{run}-baseline")
    store.users.create_user(baseline_tenant, "baseline")
    samples: dict[str, dict[str, bytes]] = {s: {"reference": refs[s][0]} for s in chosen}
    baseline_cache: dict[tuple[str, int], list[bytes]] = {}
    results: dict[str, Any] = {}

    say("baseline (prompt_only)")
    per_subject, seconds = {}, time.perf_counter()
    for subject in chosen:
        images, texts = [], []
        for index, template in enumerate(templates[subject]):
            text = class_prompt(template, classes[subject])
            if (text, index) not in baseline_cache:
                baseline_cache[text, index] = generate(baseline_tenant, "baseline", text, index, "prompt_only")
            images += baseline_cache[text, index]
            texts += [text] * per_prompt
        per_subject[subject] = score(images, refs[subject], texts)
        samples[subject]["baseline"] = images[0]
    results["baseline"] = {"plan_method": "prompt_only", "instruction": "the class prompt, e.g. 'a dog in the snow'",
                           "per_subject": per_subject, "mean": _means(per_subject),
                           "generate_seconds": round(time.perf_counter() - seconds, 2)}

    for method in settings["methods"]:
        plan_method, training = METHODS[method]
        tenant = f"dreambench-{run}-{method}"
        load_dreambench(store, tenant, directory)
        per_subject, train_seconds, generate_seconds = {}, 0.0, 0.0
        for subject in chosen:
            say(f"{method}: {subject}")
            entry: dict[str, Any] = {}
            if training:
                begun = time.perf_counter()
                # DreamBench's photos are published for this protocol: the harness gives the consent
                # to training that a real user gives for their own subject (docs/memory.md).
                store.users.set_training_consent(tenant, subject, True, actor="dreambench-harness")
                trained = train(model, tenant, subject, training, subject=subject, steps=settings["train_steps"],
                                seed=seed)
                entry["train_seconds"] = round(time.perf_counter() - begun, 2)
                entry["loss_first_last"] = [trained.losses[0], trained.losses[-1]] if trained.losses else None
                train_seconds += entry["train_seconds"]
            begun = time.perf_counter()
            images, texts = [], []
            for index, template in enumerate(templates[subject]):
                images += generate(tenant, subject, personal_instruction(template, classes[subject]), index,
                                   plan_method)
                texts += [class_prompt(template, classes[subject])] * per_prompt
            generate_seconds += time.perf_counter() - begun
            per_subject[subject] = score(images, refs[subject], texts) | entry
            samples[subject][method] = images[0]
        mean = _means(per_subject)
        results[method] = {"plan_method": plan_method, "instruction": "e.g. 'my dog in the snow'",
                           "per_subject": per_subject, "mean": mean,
                           "vs_baseline": {k: None if mean[k] is None or results["baseline"]["mean"][k] is None
                                           else mean[k] - results["baseline"]["mean"][k] for k in mean},
                           "train_seconds": round(train_seconds, 2) if training else None, "generate_seconds": round(generate_seconds, 2)}

    real = {}
    for subject in chosen:
        real[subject] = {"dino_i": _pairwise_distinct(metrics.embed_images(refs[subject], dino)),
                         "clip_i": _pairwise_distinct(metrics.embed_images(refs[subject], clip)),
                         "clip_t": None, "images": len(refs[subject])}
    subjects_info = [{"subject": s, "class_noun": classes[s], "kind": "live" if classes[s] in LIVE_CLASSES else "object",
                      "references": len(refs[s])} for s in chosen]
    _save_samples(out_dir, samples)
    image_backend = generator.backend("image")
    kinds = {"dino_i": score_kind(dino, image_backend), "clip_i": score_kind(clip, image_backend),
             "clip_t": score_kind(clip, image_backend)}
    return {"subjects": subjects_info, "results": results, "score_kinds": kinds,
            "real_images": {"per_subject": real, "mean": _means(real)}, "dino_ref": dino_ref}


def _save_samples(out_dir: Path, samples: dict[str, dict[str, bytes]], size: int = 128) -> None:
    """One thumbnail per subject and method (the first image), for the report's grid."""
    from PIL import Image

    folder = out_dir / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    for subject, by_method in samples.items():
        for method, data in by_method.items():
            with Image.open(io.BytesIO(data)) as image:
                thumb = image.convert("RGB")
                thumb.thumbnail((size, size))
                thumb.save(folder / f"{subject}-{method}.png")


# ---------------------------------------------------------------- the report


def write_dreambench_report(out_dir: Path, result: dict[str, Any]) -> dict[str, str]:
    """`dreambench.json`, `.md`, `.html` and the trade-off plot `dreambench-tradeoff.png` in `out_dir`."""
    from unipgen.eval import report
    from unipgen.eval.report import Heading, Image, Panel, Paragraph, Series, Table

    settings, results, real = result["settings"], result["results"], result["real_images"]
    markers = {"baseline": "s", "ip-adapter": "o", "lora": "^", "textual-inversion": "D"}
    panels = [Panel("CLIP-T (text alignment)", f"{label} (subject fidelity)",
                    [Series(name, [(row["clip_t"], row[key]) for row in entry["per_subject"].values()],
                            markers.get(name, "o")) for name, entry in results.items()],
                    title=f"{label} vs CLIP-T, one point per subject; large: mean",
                    references={name: (clip_t, value) for name, v in PUBLISHED.items()
                                if (clip_t := v["clip_t"]) and (value := v[key]) is not None})
              for key, label in (("dino_i", "DINO-I"), ("clip_i", "CLIP-I"))]
    plot = report.scatter_png(out_dir / "dreambench-tradeoff.png", panels,
                       title=f"DreamBench, profile {settings['profile']!r}: fidelity vs text alignment")
    result = result | {"report": {"plot": str(plot)}}

    def delta(entry: dict[str, Any], key: str) -> float | None:
        return entry.get("vs_baseline", {}).get(key)

    means = [[name, entry["plan_method"], *(entry["mean"][k] for k in ("dino_i", "clip_i", "clip_t")),
              *(delta(entry, k) for k in ("dino_i", "clip_i", "clip_t")), entry.get("train_seconds"),
              entry["generate_seconds"]] for name, entry in results.items()]
    means.append(["real images (distinct pairs)", "–", real["mean"]["dino_i"], real["mean"]["clip_i"], None,
                  None, None, None, None, None])
    published = [[name, v["dino_i"], v["clip_i"], v["clip_t"]] for name, v in PUBLISHED.items()]
    per_subject = [[s["subject"], s["class_noun"], name, row["dino_i"], row["clip_i"], row["clip_t"], row["images"]]
                   for s in result["subjects"] for name, entry in (*results.items(), ("real images", real))
                   if (row := entry["per_subject"][s["subject"]])]
    machine_info = result["machine"]
    blocks: list[Any] = [Paragraph(
        f"{len(settings['subjects'])} subjects of {settings['data']}, {settings['prompts_per_subject']} prompts × "
        f"{settings['images_per_prompt']} image(s) each, profile {settings['profile']!r}, methods "
        f"{', '.join(settings['methods'])}; DINO {settings['dino']}, CLIP: {settings['clip']}; seed "
        f"{settings['seed']}; {result['seconds']} s on {machine_info['cpu']} ({machine_info['cores']} cores).")]
    kinds = result.get("score_kinds", {})
    mechanical = [name for name, kind in kinds.items() if kind == MECHANICAL]
    if mechanical:
        blocks.append(Paragraph(f"{', '.join(HEADERS[m] for m in mechanical)}: {MECHANICAL} — {MECHANICAL_NOTE} "
                                "(the generator or the scoring encoder has random weights). They check the harness "
                                "and mean nothing about the methods."))
    head = {key: f"{label} ({MECHANICAL})" if kinds.get(key) == MECHANICAL else label for key, label in HEADERS.items()}
    blocks += [
        Paragraph("DINO-I and CLIP-I: mean cosine between generated images and the subject's real photos (subject "
                  "fidelity; personalization should raise them over the baseline). CLIP-T: mean cosine between "
                  "each image and its prompt with the class noun in place of the subject token (text alignment, "
                  "the trade-off). Baseline: the class prompt alone (plan prompt_only)."),
        Heading("Means over subjects"),
        Table(["method", "plan", head["dino_i"], head["clip_i"], head["clip_t"], "Δ DINO-I", "Δ CLIP-I", "Δ CLIP-T",
               "train s", "generate s"], means),
        Heading("Published (DreamBooth, Table 1)"),
        Table(["method", "DINO-I", "CLIP-I", "CLIP-T"], published),
        Image(plot.name, "Subject fidelity vs text alignment (one point per subject and method; stars: published)"),
        Heading("Per subject"),
        Table(["subject", "class", "method", head["dino_i"], head["clip_i"], head["clip_t"], "images"], per_subject),
        Heading("Samples (first image; the first column is a real photo)"),
    ]
    for s in result["subjects"]:
        for name in ("reference", *results):
            path = f"samples/{s['subject']}-{name}.png"
            if (out_dir / path).is_file():
                blocks.append(Image(path, f"{s['subject']}: {name}", width=112))
    files = report.write_report(out_dir, "dreambench", "DreamBench (DreamBooth protocol)", blocks,
                         result | {"report": {"plot": str(plot), "json": str(out_dir / "dreambench.json"),
                                              "markdown": str(out_dir / "dreambench.md"),
                                              "html": str(out_dir / "dreambench.html")}})
    return {**files.as_dict(), "plot": str(plot)}
