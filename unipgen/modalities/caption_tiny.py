"""A tiny random BLIP (captioning and visual question answering) with a locally trained
tokenizer, for tests and offline demos of the caption backend (`unipgen.modalities.caption`).

`tiny_blip_dir` holds two folders, like the two Hub checkpoints they stand in for
(`Salesforce/blip-image-captioning-base`, `Salesforce/blip-vqa-base`): ``caption``
(`BlipForConditionalGeneration`) and ``vqa`` (`BlipForQuestionAnswering`), each with its BERT
WordPiece tokenizer (trained here on a small word list, with BLIP's ``[DEC]`` start token) and
a PIL image processor at 32 pixels. Both are 2-layer, 32-wide models built from one config
with random weights, once per seed, atomically, on first use (about a second). Their captions
are random words; the code paths (image processing, the vision encoder, the question encoder,
beam search, decoding) are the real ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unipgen.tiny import TINY_RANDOM, cached_tiny_model

TINY_BLIP = TINY_RANDOM
_VERSION = "1"
#: Subfolders of `tiny_blip_dir`: the captioning model and the visual-question model.
CAPTION_FOLDER, VQA_FOLDER = "caption", "vqa"
IMAGE_SIZE = 32

# Words the tiny tokenizer learns from: captions and questions of the kind BLIP sees.
_CORPUS = ["a", "an", "the", "photo", "picture", "of", "dog", "cat", "man", "woman", "person", "child", "sitting",
           "standing", "running", "on", "in", "at", "with", "beach", "grass", "street", "table", "room", "sky",
           "water", "snow", "red", "blue", "green", "white", "black", "brown", "yellow", "what", "color", "is",
           "are", "how", "many", "there", "where", "who", "doing", "this", "it", "yes", "no", "one", "two",
           "three", "and", "small", "large", "wooden", "sunny", "day", "night", "toy", "ball", "car", "tree"]
_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]


def tiny_blip_dir(seed: int = 0) -> Path:
    """The folder of the tiny random BLIP pair for `seed` (`CAPTION_FOLDER`, `VQA_FOLDER`), built on first use."""
    return cached_tiny_model("blip", _VERSION, seed, f"{VQA_FOLDER}/config.json", _save_tiny_blip)


def tiny_blip_tokenizer() -> Any:
    """A BERT WordPiece tokenizer trained on the word list above, with BLIP's [DEC] as its BOS token."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizer

    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    backend.train_from_iterator([" ".join(_CORPUS)] * 4, trainers.WordPieceTrainer(vocab_size=200,
                                                                                     special_tokens=_SPECIAL))
    cls, sep = _SPECIAL.index("[CLS]"), _SPECIAL.index("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return BertTokenizer(tokenizer_object=backend, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                             cls_token="[CLS]", mask_token="[MASK]", bos_token="[DEC]", model_max_length=64)


def tiny_blip_config(tokenizer: Any) -> Any:
    """A 2-layer, 32-wide BLIP config over `tokenizer`'s vocabulary (32-pixel images, 8-pixel patches)."""
    from transformers import BlipConfig

    ids = tokenizer.convert_tokens_to_ids
    # A wide init (0.2; BLIP's vision default is 1e-10) makes the tiny model's words depend on the
    # image and the question instead of being the same noise for every input.
    text = {"initializer_range": 0.2, "vocab_size": len(tokenizer), "hidden_size": 32, "encoder_hidden_size": 32, "intermediate_size": 37,
            "projection_dim": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 64,
            "bos_token_id": ids("[DEC]"), "pad_token_id": ids("[PAD]"), "sep_token_id": ids("[SEP]"),
            "eos_token_id": ids("[SEP]")}
    vision = {"initializer_range": 0.2, "hidden_size": 32, "intermediate_size": 37, "projection_dim": 32, "num_hidden_layers": 2,
              "num_attention_heads": 4, "image_size": IMAGE_SIZE, "patch_size": 8}
    return BlipConfig(text_config=text, vision_config=vision, projection_dim=32, image_text_hidden_size=32,
                      initializer_range=0.2)


def _save_tiny_blip(scratch: Path, seed: int) -> None:
    import torch
    from transformers import BlipForConditionalGeneration, BlipForQuestionAnswering

    tokenizer = tiny_blip_tokenizer()
    config = tiny_blip_config(tokenizer)
    processor = image_processor_class()(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    for folder, model_class in ((CAPTION_FOLDER, BlipForConditionalGeneration), (VQA_FOLDER, BlipForQuestionAnswering)):
        torch.manual_seed(seed)  # the same vision tower and decoder in both, as in the real pair
        model_class(config).eval().save_pretrained(scratch / folder)
        tokenizer.save_pretrained(scratch / folder)
        processor.save_pretrained(scratch / folder)


def image_processor_class() -> Any:
    """BLIP's PIL image processor (transformers 5: no torchvision needed), or the one class of 4.x."""
    import transformers

    try:
        return transformers.BlipImageProcessorPil
    except AttributeError:  # transformers 4.x
        return transformers.BlipImageProcessor


__all__ = ["CAPTION_FOLDER", "TINY_BLIP", "VQA_FOLDER", "image_processor_class", "tiny_blip_config", "tiny_blip_dir",
           "tiny_blip_tokenizer"]
