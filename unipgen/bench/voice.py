"""`unipgen bench voice`: does the matched Kokoro voice sound more like the user than the default?

On a folder with one sub-folder of recordings (FLAC/WAV/OGG) per speaker, for each speaker:

1. the user's voice embedding is the mean unit Resemblyzer vector of all but the last utterance
   (as unipgen's voice memory builds it);
2. the held-out last utterance's text (from a LibriSpeech ``*.trans.txt`` or a ``.txt`` beside
   it, else `FIXED_TEXT`) is spoken by `KokoroSpeechBackend` twice: a ``speaker_embedding`` plan
   (the voice searched for that embedding) and a ``prompt_only`` plan (the default voice);
3. each output and the held-out real utterance are embedded with the same encoder: the cosines
   are `matched_cos` and `default_cos`, and `voice_match_gain` = matched - default.

The held-out utterance never enters the search, so the gain says how much closer the matched
voice is to the speaker's real voice on unseen audio, not just to the probe the search scored.
For scale: two real utterances of one LibriSpeech speaker average about 0.87 with Resemblyzer,
two speakers about 0.52. `rtf` is synthesis seconds per second of audio (below 1: faster than
real time), measured on the outputs.

    unipgen bench voice [--data DATA_DIR] [--quick]
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from unipgen.eval.environment import machine, shared_data_dir

if TYPE_CHECKING:
    from unipgen.schema.context import Method
    from unipgen.schema.generation import GenerationRequest

AUDIO_SUFFIXES = {".flac", ".wav", ".ogg"}
#: Spoken when a held-out utterance has no transcript.
FIXED_TEXT = "I had not expected to find anyone there so late, and for a moment neither of us said a word."


def run(data_dir: str | Path | None = None, quick: bool = False, speakers: int | None = None,
        search_budget: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Matched vs default voice per speaker; quick: 2 speakers and a 6-synthesis search."""
    import torch

    from unipgen.core.encoders.voice import ResemblyzerVoiceEncoder
    from unipgen.modalities.speech import KokoroSpeechBackend

    torch.set_num_threads(1)
    root = Path(data_dir) if data_dir else shared_data_dir() / "librispeech-test-other-mini"
    folders = sorted(p for p in root.iterdir() if p.is_dir() and _utterances(p))
    if not folders:
        raise FileNotFoundError(f"no sub-folders with {sorted(AUDIO_SUFFIXES)} files in {root}")
    folders = folders[: speakers or (2 if quick else len(folders))]
    budget = search_budget or (6 if quick else 16)
    backend = KokoroSpeechBackend(search_budget=budget, search_seed=seed)
    backend.setup()
    encoder = ResemblyzerVoiceEncoder()

    rows = []
    for folder in folders:
        files = _utterances(folder)
        if len(files) < 2:
            continue
        enrolled = encoder.encode([f.read_bytes() for f in files[:-1]])
        user = enrolled.mean(axis=0)
        user /= np.linalg.norm(user)
        held = encoder.encode([files[-1].read_bytes()])[0]
        text, has_transcript = _transcript(files[-1])
        started = time.perf_counter()
        search = backend.matched(user)
        search_s = time.perf_counter() - started
        [[matched], [default]] = backend.generate(
            [_request(text, user, "speaker_embedding", seed), _request(text, user, "prompt_only", seed)], _no_blobs)
        matched_cos, default_cos = (float(encoder.encode([out.data])[0] @ held) for out in (matched, default))
        rows.append({
            "speaker": folder.name, "enrolled_utterances": len(files) - 1, "held_out": files[-1].name,
            "transcript": has_transcript, "matched_cos": round(matched_cos, 4), "default_cos": round(default_cos, 4),
            "voice_match_gain": round(matched_cos - default_cos, 4),
            "probe_gain": round(search.score - search.default_score, 4),
            "user_similarity_matched": matched.meta["speaker_similarity"],
            "user_similarity_default": default.meta["speaker_similarity"],
            "search_s": round(search_s, 1), "rtf": round((matched.meta["rtf"] + default.meta["rtf"]) / 2, 3),
            "seconds": matched.meta["seconds"],
        })
    gains = [row["voice_match_gain"] for row in rows]
    return {
        "data_dir": str(root),
        "speakers": len(rows),
        "voice_match_gain": round(float(np.mean(gains)), 4),
        "gain_positive_speakers": sum(g > 0 for g in gains),
        "matched_cos": round(float(np.mean([row["matched_cos"] for row in rows])), 4),
        "default_cos": round(float(np.mean([row["default_cos"] for row in rows])), 4),
        "probe_gain": round(float(np.mean([row["probe_gain"] for row in rows])), 4),
        "rtf": round(float(np.mean([row["rtf"] for row in rows])), 3),
        "search_s_per_speaker": round(float(np.mean([row["search_s"] for row in rows])), 1),
        "per_speaker": rows,
        "settings": {"search_budget": budget, "seed": seed, "model": backend.ref,
                     "default_voice": backend.default_voice, "probe_text": backend.probe_text,
                     "threads": backend.threads, "quick": quick},
        "machine": machine("onnxruntime", "numpy"),
    }


def _utterances(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)


def _transcript(path: Path) -> tuple[str, bool]:
    """The utterance's text from `<name>.txt` or a LibriSpeech `*.trans.txt`, else `FIXED_TEXT`."""
    own = path.with_suffix(".txt")
    if own.is_file() and own.read_text().strip():
        return own.read_text().strip(), True
    for listing in path.parent.glob("*.trans.txt"):
        for line in listing.read_text().splitlines():
            key, _, text = line.partition(" ")
            if key == path.stem and text.strip():
                return text.strip().capitalize(), True  # LibriSpeech writes upper case
    return FIXED_TEXT, False


def _no_blobs(sha: str) -> bytes:
    """The blob fetcher of this bench: its requests name no file (the voice is an embedding)."""
    raise FileNotFoundError(f"the voice bench has no blob {sha}")


def _request(text: str, user: np.ndarray, method: Method, seed: int) -> GenerationRequest:
    from unipgen.schema.context import Conditioning, PersonalizationPlan, UserContext
    from unipgen.schema.generation import GenerationOptions, GenerationRequest

    context = UserContext(tenant="bench", user="speaker", modality="speech", instruction=text, profile={},
                          conditioning=Conditioning(voice_embedding=[float(x) for x in user]),
                          built_at=datetime(2024, 1, 1, tzinfo=UTC))
    plan = PersonalizationPlan(modality="speech", method=method, prompt=text, reasons=["voice bench"],
                               budget_tokens=0, used_tokens=0)
    return GenerationRequest(context=context, plan=plan, options=GenerationOptions(seed=seed))

