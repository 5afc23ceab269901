"""The demo's generation step: one request per modality, for the sample user and for a guest.

The guest is a user with no memory at all, so the same request made for them is the
non-personalized baseline: no preference keywords, no subject, no face, no voice, no melody.
Each pair is printed as it is made and returned for the demo report (`unipgen.demo_report`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unipgen.demo_report import ReportOutput, ReportPair, ReportPost
from unipgen.schema.generation import GenerationOptions
from unipgen.tiny import score_kind, shown_score

#: The persona the demo generates for: a face, a voice and a dog (each file with its license).
PERSONA_SAMPLE = Path(__file__).with_name("data") / "persona-sample"
GUEST = "guest"  # created empty by the demo: the baseline of every pair


@dataclass(frozen=True)
class DemoRequest:
    modality: str
    instruction: str
    what: str  # what the personalization uses, for the printed line
    options: dict[str, Any]
    references: tuple[str, ...] = ()  # persona photos the output is scored against (CLIP-I)


_DOG = ("subject/dog-00.jpg", "subject/dog-01.jpg")


DEMO_REQUESTS = (
    DemoRequest("text", "In two sentences, recommend a movie for my Friday night and say why it suits me.",
                "unseen films recommended from their ratings, and their tags", {"max_new_tokens": 60}),
    DemoRequest("image", "a photo of my dog on the beach", "the dog's photos", {}, _DOG),
    DemoRequest("image", "a portrait of me in a garden", "their face embedding (FaceID)", {}, ("faces/s1-1.pgm",)),
    DemoRequest("video", "a video of my dog running on the beach", "the dog's photos", {}, _DOG),
    DemoRequest("audio", "music for my Friday movie night", "their taste, and the tune of their recording",
                {"melody": "greeting"}),
    DemoRequest("speech", "Good evening! Tonight I recommend a film with a twist you will not see coming.",
                "a voice matched to their recording", {}),
    DemoRequest("3d", "a 3d model of my dog", "the dog's first photo", {}, _DOG),
)


def generate_pairs(generator: Any, tenant: str, user: str, say: Callable[[str], None]) -> list[ReportPair]:
    """Each demo request for `user` and for the guest; prints one line per modality."""
    pairs = []
    for request in DEMO_REQUESTS:
        options = dict(request.options)
        if request.modality == "audio" and not generator.model.profile.backends["audio"].type.endswith("-melody"):
            options.pop("melody", None)  # a profile whose music model takes no melody
        mine = generator.generate(tenant, user, request.modality, request.instruction, GenerationOptions(**options))
        options.pop("melody", None)  # the guest has no recording to take a tune from
        theirs = generator.generate(tenant, GUEST, request.modality, request.instruction, GenerationOptions(**options))
        personal = _output(generator, tenant, mine, f"for user {user}", request)
        baseline = _output(generator, tenant, theirs, f"for {GUEST!r}, a user with no memory", request)
        say(f"     {request.modality} ({mine[0].plan.method}, with {request.what}): {summary_line(personal)}")
        if mine[0].plan.recommended:
            texts = generator.model.store.catalog.item_texts(tenant, mine[0].plan.recommended)
            say(f"       recommended in the prompt (not rated by them): "
                f"{'; '.join(texts[k] for k in mine[0].plan.recommended[:3])}")
        pairs.append(ReportPair(personal, baseline, request=request.instruction))
    return pairs


#: The demo's multi-modal post: one request, text written about the image made with it.
POST_REQUEST = ("text", "image"), "a photo of my dog on the beach for tonight's post"


def generate_post(generator: Any, tenant: str, user: str, say: Callable[[str], None]) -> ReportPost:
    """The demo's post for `user` (one job, one group; `InlineGenerator.post`); prints one line."""
    modalities, instruction = POST_REQUEST
    result, members = generator.post(tenant, user, modalities, instruction, GenerationOptions(max_new_tokens=60))
    kind = result["score_kinds"].get("consistency")
    outputs = [ReportOutput.from_artifact(m.plan.modality, m.plan.modality, m,
                                          {"caption": result["caption"]} if m.plan.modality == "text" else {})
               for m in members]
    say(f"     post {result['group']} ({', '.join(modalities)}): text from the caption {result['caption']!r}, "
        f"consistency {shown_score(result['consistency'], kind)}")
    return ReportPost(result["group"], instruction, outputs, result["caption"], result["consistency"], kind)


def _output(generator: Any, tenant: str, made: list, title: str, request: DemoRequest) -> ReportOutput:
    """The report entry of one request: its first output, with a 3D mesh's preview image (the
    demo's store is local, so every output has a file), and its CLIP scores if it is visual."""
    main = made[0]
    meta = generator.model.store.artifacts.artifact(tenant, main.key).meta
    shown = {key: value for key, value in (meta or {}).items() if key in _SHOWN}
    preview = made[1] if len(made) > 1 and main.plan.modality == "3d" else None
    if request.references:
        frames = preview.path if preview is not None else main.path
        encoder = generator.model.encoders.image
        scores = clip_scores(encoder, frames, main.media_type, request)
        kinds = dict.fromkeys(scores, score_kind(encoder))  # the tiny CLIP's: mechanical checks
        shown |= scores | {"score_kinds": {**shown.get("score_kinds", {}), **kinds}}
    return ReportOutput.from_artifact(main.plan.modality, title, main, shown, preview=preview)


def clip_scores(encoder: Any, path: str, media_type: str, request: DemoRequest) -> dict[str, float]:
    """CLIP-I (to the persona's reference photos: subject fidelity) and CLIP-T (to the request:
    text alignment) of an image, a 3D preview, or a video's frames, with the profile's encoder
    (what they are, a measure or a mechanical check, is `unipgen.tiny.score_kind(encoder)`)."""
    from unipgen.eval.image_metrics import clip_i, clip_t
    from unipgen.eval.media_metrics import read_frames

    images = read_frames(path) if media_type.startswith("video/") else [path]
    references = [PERSONA_SAMPLE / name for name in request.references]
    return {"clip_i": round(clip_i(images, references, encoder), 4),
            "clip_t": round(clip_t(images, request.instruction, encoder), 4)}


#: Meta shown in the report (the rest, such as seeds and sizes, is in the store).
_SHOWN = ("model", "num_frames", "fps", "temporal_consistency", "seconds", "melody", "voice", "speaker_similarity",
          "rtf", "vertices", "faces", "format", "subject", "score_kinds")


def summary_line(output: ReportOutput) -> str:
    """The console line of one output: its scores (labelled by kind) and its file, or its text."""
    meta = output.meta
    if output.media_type.startswith("text/"):
        assert output.path is not None  # the demo's store is local: every output has a file
        return " ".join(Path(output.path).read_text(encoding="utf-8", errors="replace").split())[:300]
    scores, kinds = ("clip_i", "temporal_consistency", "speaker_similarity"), meta.get("score_kinds", {})
    figures = [f"{key.replace('_', ' ')} {shown_score(meta[key], kinds.get(key))}" for key in scores
               if isinstance(meta.get(key), float)]
    figures += [f"{meta['vertices']} vertices"] if "vertices" in meta else []
    return (f"{', '.join(figures)}: " if figures else "") + str(output.path)
