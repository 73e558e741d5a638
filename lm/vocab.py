"""Vocabularies with the seqio interface: encode, decode, eos_id, pad_id, vocab_size.

`TokenizerVocabulary` wraps a Hugging Face `tokenizers` tokenizer (a
`tokenizer.json`), which is what Llama/Qwen2-family checkpoints ship and what
the embedded default model uses. `train_byte_level_bpe` builds one from text,
offline. `SeqioVocabulary` adapts a `seqio.Vocabulary` when seqio is installed
(it is not a dependency).

Contract shared by every vocabulary here:
  * `encode(text)` never yields special tokens, even for text that spells
    one; `decode(ids)` drops ids at or
    after the first EOS and every PAD, so a padded, EOS-terminated row decodes
    to just its text;
  * `eos_id` and `pad_id` are distinct ids below `vocab_size`.
"""

from __future__ import annotations

import os
from typing import Iterable, Protocol, Sequence

import tokenizers


class Vocabulary(Protocol):
    """What the LM stack needs of a vocabulary (seqio's interface)."""

    @property
    def vocab_size(self) -> int:
        ...

    @property
    def eos_id(self) -> int:
        ...

    @property
    def pad_id(self) -> int:
        ...

    def encode(self, text: str) -> list[int]:
        ...

    def decode(self, ids: Sequence[int]) -> str:
        ...


def _strip(ids: Sequence[int], eos_id: int, pad_id: int) -> list[int]:
    """Ids before the first EOS, without PAD."""
    out = []
    for i in ids:
        i = int(i)
        if i == eos_id:
            break
        if i != pad_id:
            out.append(i)
    return out


class TokenizerVocabulary:
    """A `tokenizers.Tokenizer` with named EOS and PAD tokens."""

    def __init__(self, tokenizer: tokenizers.Tokenizer, *, eos_token: str,
                 pad_token: str):
        self.tokenizer = tokenizer
        ids = {}
        for role, token in (('eos', eos_token), ('pad', pad_token)):
            token_id = tokenizer.token_to_id(token)
            if token_id is None:
                raise ValueError(f'{role} token {token!r} is not in the vocabulary')
            ids[role] = token_id
        if ids['eos'] == ids['pad']:
            raise ValueError('eos and pad must be different tokens')
        self._eos_id, self._pad_id = ids['eos'], ids['pad']
        self.eos_token, self.pad_token = eos_token, pad_token
        # Text that spells a special token ('<eos>' in a string literal) is
        # text: only the sampler and data pipelines place EOS and PAD ids.
        tokenizer.encode_special_tokens = True

    @classmethod
    def from_file(cls, path: str, *, eos_token: str,
                  pad_token: str) -> TokenizerVocabulary:
        """Loads a `tokenizer.json` (a file, or a folder holding one)."""
        if os.path.isdir(path):
            path = os.path.join(path, 'tokenizer.json')
        if not os.path.isfile(path):
            raise FileNotFoundError(f'no tokenizer file at {path}')
        return cls(tokenizers.Tokenizer.from_file(path), eos_token=eos_token,
                   pad_token=pad_token)

    def save(self, path: str) -> None:
        self.tokenizer.save(path)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def eos_id(self) -> int:
        return self._eos_id

    @property
    def pad_id(self) -> int:
        return self._pad_id

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(_strip(ids, self.eos_id, self.pad_id),
                                     skip_special_tokens=False)


def train_byte_level_bpe(texts: Iterable[str], *, vocab_size: int,
                         special_tokens: Sequence[str] = ('<pad>', '<eos>'),
                         min_frequency: int = 2,
                         whole_tokens: Sequence[str] = ()) -> TokenizerVocabulary:
    """Trains a byte-level BPE tokenizer (lossless on any text) offline.

    The first two special tokens are PAD and EOS, with ids 0 and 1.
    `whole_tokens` (e.g. the numbers '0'..'300') become single, non-special
    tokens after the BPE ones: text is split at their (longest, leftmost)
    occurrences before BPE runs, so '137' is one token and '4317' is
    '43' + '17'. The vocabulary has at most `vocab_size` tokens in all.
    """
    if len(special_tokens) < 2:
        raise ValueError('special_tokens must name at least PAD and EOS')
    whole_tokens = list(dict.fromkeys(whole_tokens))
    vocab_size -= len(whole_tokens)
    if vocab_size <= len(special_tokens) + 256:
        raise ValueError('vocab_size leaves no room for the byte alphabet')
    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(
        add_prefix_space=False)
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency,
        special_tokens=list(special_tokens),
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.add_tokens([tokenizers.AddedToken(t, normalized=False)
                          for t in whole_tokens])
    return TokenizerVocabulary(tokenizer, pad_token=special_tokens[0],
                               eos_token=special_tokens[1])


class SeqioVocabulary:
    """Adapts a `seqio.Vocabulary` (optional dependency) to this interface."""

    def __init__(self, vocabulary):
        self.vocabulary = vocabulary
        if vocabulary.eos_id is None:
            raise ValueError('the seqio vocabulary has no EOS id')

    @property
    def vocab_size(self) -> int:
        return self.vocabulary.vocab_size

    @property
    def eos_id(self) -> int:
        return self.vocabulary.eos_id

    @property
    def pad_id(self) -> int:
        return self.vocabulary.pad_id

    def encode(self, text: str) -> list[int]:
        return list(self.vocabulary.encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        return self.vocabulary.decode(_strip(ids, self.eos_id, self.pad_id))
