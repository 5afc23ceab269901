"""A tiny random Llama with a locally trained tokenizer, for tests and offline demos of the text backend.

`tiny_lm_dir` holds a 2-layer Llama (32 wide) and a BPE tokenizer with a chat template, built
from configs with random weights (no download), once per seed, atomically, on first use (about
a second). Its outputs carry no meaning; the code paths (chat template, batched sampling, PEFT
adapters, training) are the real ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from unipgen.tiny import build_atomically, cached_tiny_model

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

TINY_LM = "tiny-random"
_VERSION = "1"

# Words the tiny tokenizer learns from; its outputs carry no meaning, the code paths are real.
_CORPUS = ["write", "me", "a", "short", "postcard", "note", "letter", "poem", "story", "about", "my", "trip", "to", "the", "sea", "mountains", "city", "i", "love", "like", "dislike", "dusty", "desert", "towns", "quiet", "evenings", "coffee", "books", "music", "films", "westerns", "drama", "hello", "dear", "friend", "thank", "you", "for", "the", "lovely", "day", "we", "went", "walked", "saw", "ate", "drank", "and", "then", "it", "was", "good", "great", "nice", "warm", "cold", "sunny", "rainy", "yesterday", "today", "tomorrow", "with", "from", "in", "on", "at", "of", "is", "are"]
# A chat template in the ChatML spirit, so the tiny model exercises `apply_chat_template`.
_TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|> {{ message['content'] }} <eos> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_lm_dir(seed: int = 0) -> Path:
    """The folder of the tiny random Llama for `seed`, built on first use (about a second)."""
    return cached_tiny_model("lm", _VERSION, seed, "config.json", _save_tiny_lm)


def _tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A small BPE tokenizer trained here, with a chat template (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "<bos>", "<eos>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>"]
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    backend.train_from_iterator([" ".join(_CORPUS)] * 4, trainers.BpeTrainer(vocab_size=300, special_tokens=special))
    # A causal LM prompt starts with <bos> and must not end with <eos>.
    backend.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>",
                                        eos_token="<eos>", unk_token="<unk>", model_max_length=2048)
    tokenizer.chat_template = _TINY_CHAT_TEMPLATE
    return tokenizer


def build_tiny_lm(directory: Path, seed: int = 0) -> Path:
    """Save a tiny random Llama (model and tokenizer) to `directory`; atomic, so racing builders are safe."""
    return build_atomically(directory, lambda scratch: _save_tiny_lm(scratch, seed))


def _save_tiny_lm(scratch: Path, seed: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _tiny_tokenizer()
    # A wide init (0.3, not 0.02) makes the logits peaked: sampling then depends on the weights
    # (and on adapters) instead of being near-uniform noise.
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         initializer_range=0.3, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                         tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(scratch)
    tokenizer.save_pretrained(scratch)


__all__ = ["TINY_LM", "build_tiny_lm", "tiny_lm_dir"]
