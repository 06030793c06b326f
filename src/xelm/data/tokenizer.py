"""The shared tokenizer: the base model's, or a byte-level BPE trained here.

Every expert branches from one seed, so all of them (and the dense baseline) share this
tokenizer; it is saved once as an HF folder under ``data/tokenizer``. Byte-level BPE
covers every script (no unknown tokens), so a language added later is still encodable.
Training on a language-balanced sample (the same byte budget per language) keeps small
languages from being split into many more tokens per byte than large ones.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

EOS = "<|endoftext|>"
PAD = "<pad>"


def balanced_sample(corpus: dict[str, Iterable[str]], bytes_per_language: int):
    """Yield documents, up to ``bytes_per_language`` UTF-8 bytes from each language.

    Each language's documents may be a stream: it is read only as far as the sample goes,
    then closed, so the sample (not the corpus) bounds what is read and held.
    """
    for docs in corpus.values():
        used = 0
        try:
            for doc in docs:
                if used >= bytes_per_language:
                    break
                used += len(doc.encode("utf-8"))
                yield doc
        finally:
            close = getattr(docs, "close", None)
            if close is not None:
                close()


def train_bpe(corpus: dict[str, Iterable[str]], vocab_size: int, bytes_per_language: int,
              out_dir: str | Path):
    """Train a byte-level BPE on a balanced sample (:func:`balanced_sample`: each
    language's documents may be a stream); save it as an HF tokenizer folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS, PAD], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(balanced_sample(corpus, bytes_per_language), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS,
                                   pad_token=PAD, unk_token=None)
    fast.save_pretrained(str(out_dir))
    log.info("trained byte-level BPE: %d tokens", fast.vocab_size)
    return fast


def import_tokenizer(base: str, out_dir: str | Path, trust_remote_code: bool = False):
    """Copy the base model's tokenizer into the run directory (a local folder or hub id)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base, trust_remote_code=trust_remote_code)
    if tok.eos_token_id is None:
        raise ValueError(f"the tokenizer of {base!r} has no end-of-sequence token; "
                         "xelm separates documents with it")
    tok.save_pretrained(str(out_dir))
    return tok


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))
