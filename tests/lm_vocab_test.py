"""Vocabularies: lossless byte-level BPE, EOS/PAD handling, file round trip."""

import pytest

from lm import vocab

CODE = [
    'class Model(nn.Module):\n    @nn.compact\n    def __call__(self, x):\n'
    '        x = nn.Dense(features=10)(x)\n        return x\n',
    '"""Metrics:\n{\'num_params\': \'4800\', \'val_accuracy\': \'0.865\'}\n"""\n',
    'x = jnp.concatenate([a, b], axis=-1)  # ünïcödé ✓\n\ttabs\n',
] * 20


@pytest.fixture(scope='module')
def trained():
    return vocab.train_byte_level_bpe(CODE, vocab_size=300)


def test_round_trip_is_lossless(trained):
    for text in CODE[:3] + ['never seen: 日本語 \x00 ~~~']:
        assert trained.decode(trained.encode(text)) == text


def test_special_ids(trained):
    assert (trained.pad_id, trained.eos_id) == (0, 1)
    assert trained.vocab_size <= 300
    assert 1 not in trained.encode('<eos> is just text here')


def test_decode_stops_at_eos_and_drops_pad(trained):
    ids = trained.encode('x = 1')
    row = [trained.pad_id] * 3 + ids + [trained.eos_id] + trained.encode('junk')
    assert trained.decode(row) == 'x = 1'


def test_file_round_trip(trained, tmp_path):
    trained.save(str(tmp_path / 'tokenizer.json'))
    loaded = vocab.TokenizerVocabulary.from_file(
        str(tmp_path), eos_token='<eos>', pad_token='<pad>')
    assert loaded.encode(CODE[0]) == trained.encode(CODE[0])
    assert loaded.vocab_size == trained.vocab_size
    with pytest.raises(FileNotFoundError):
        vocab.TokenizerVocabulary.from_file(str(tmp_path / 'nope'),
                                            eos_token='<eos>', pad_token='<pad>')
    with pytest.raises(ValueError, match='not in the vocabulary'):
        vocab.TokenizerVocabulary.from_file(str(tmp_path), eos_token='</s>',
                                            pad_token='<pad>')


class FakeSeqioVocabulary:
    """The seqio.Vocabulary surface (seqio itself needs TensorFlow)."""

    vocab_size, eos_id, pad_id = 260, 1, 0

    def encode(self, text):
        return [b + 2 for b in text.encode()]

    def decode(self, ids):
        return bytes(i - 2 for i in ids).decode()


def test_seqio_adapter():
    v = vocab.SeqioVocabulary(FakeSeqioVocabulary())
    assert v.decode(v.encode('abc') + [1, 70]) == 'abc'
    assert (v.vocab_size, v.eos_id, v.pad_id) == (260, 1, 0)
