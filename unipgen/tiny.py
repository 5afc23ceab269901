"""A tokenizer trained locally on a small word list, shared by the tiny random models.

Tiny models (CLIP for the encoders, Stable Diffusion for the image backend) are built from
configs with random weights for tests and offline demos; their tokenizer is trained here, so
nothing is downloaded. It sits at the package top, beside settings and errors, because both
`unipgen.core` and `unipgen.modalities` use it and neither may import the other.
"""

from __future__ import annotations

# Words the tiny tokenizer learns from: prompts and nouns of the kind unipgen sees.
_CORPUS = (
    "a photo of a dog cat backpack vase clock toy sneaker candle bowl bear plushie robot duck teapot "
    "in the jungle snow beach city street on top of a wooden floor with a blue house in the background "
    "red green blue yellow purple shiny wet cube a cartoon painting watercolor sketch style of van gogh "
    "action adventure animation children comedy crime documentary drama fantasy horror musical mystery "
    "romance sci-fi thriller war western noir portrait landscape sunset mountain river forest"
).split()


def build_tiny_tokenizer(max_length: int = 77):  # noqa: ANN201
    """A BPE tokenizer (pad/bos/eos/unk = 0/1/2/3) trained on the word list above; deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "<bos>", "<eos>", "<unk>"]
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.BPEDecoder()
    backend.train_from_iterator([" ".join(_CORPUS)] * 4, trainers.BpeTrainer(vocab_size=300, special_tokens=special))
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 1), ("<eos>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>", model_max_length=max_length)
