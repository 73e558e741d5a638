"""lm.pretrain: packing, the tiny gin run end to end, resume after a crash, export."""

import json
import os
import subprocess
import sys

import gin
import jax
import numpy as np
import pytest

from lm import checkpoints, pretrain
from lm import vocab as vocab_lib

SEPARATOR = '<|endoftext|>'
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_corpus(folder) -> None:
    rng = np.random.default_rng(0)
    for name, count in (('train-00000.txt', 120), ('valid-code.txt', 8)):
        docs = [f'def f{i}(x):\n    return x * {rng.integers(300)} + {i}\n'
                for i in range(count)]
        (folder / name).write_text(''.join(d + SEPARATOR for d in docs))


def run(workdir, corpus, *bindings):
    gin.clear_config()
    gin.add_config_file_search_path(ROOT)
    gin.parse_config_files_and_bindings(
        [os.path.join(ROOT, 'gin/lm/pretrain_tiny.gin')],
        [f"CORPUS_DIR = '{corpus}'", *bindings])
    try:
        return gin.get_configurable(pretrain.train)(workdir=str(workdir))
    finally:
        gin.clear_config()


def test_pack_keeps_documents_apart():
    vocab = vocab_lib.train_byte_level_bpe(['abc abd ' * 20], vocab_size=300,
                                           whole_tokens=['7'])
    docs = ['abc', 'abd 7', 'abc abc abc']
    tokens, segments = pretrain.pack(docs, vocab, seq_len=4)
    assert tokens.shape == segments.shape and tokens.shape[1] == 5
    flat_tokens, flat_segments = tokens.ravel(), segments.ravel()
    assert (flat_tokens == vocab.eos_id).sum() == 3
    # Segment ids restart in every row; padding (segment 0) is PAD.
    assert (segments[:, 0] == 1).all()
    assert (flat_tokens[flat_segments == 0] == vocab.pad_id).all()
    # No document that fits in a row is cut: every row ends with an EOS.
    for row, segment in zip(tokens, segments):
        assert row[segment > 0][-1] == vocab.eos_id
    # A document's tokens then EOS; the next one is a new segment.
    pieces = [vocab.decode(row[segment == k][:-1])
              for row, segment in zip(tokens, segments)
              for k in range(1, segment.max() + 1)]
    assert sorted(pieces) == sorted(docs)  # Each fits a row: none is cut.


def test_pack_fills_rows_best_fit_decreasing():
    vocab = vocab_lib.train_byte_level_bpe(['abc abd ' * 20], vocab_size=300,
                                           whole_tokens=['7'])
    # 5, 4, 5, 4, 3 and 3 tokens with their EOS: appended in order they
    # need 5 rows of 8; the longest first, each into the fullest row it
    # fits, 3 full rows.
    docs = ['abc abc abc', 'abc abc', 'abd 7', 'abc abc', 'abc', 'abc']
    assert [len(vocab.encode(d)) + 1 for d in docs] == [5, 4, 5, 4, 3, 3]
    tokens, segments = pretrain.pack(docs, vocab, seq_len=7)
    assert tokens.shape == (3, 8) and (segments > 0).all()
    pieces = sorted(vocab.decode(row[segment == k][:-1])
                    for row, segment in zip(tokens, segments)
                    for k in range(1, segment.max() + 1))
    assert pieces == sorted(docs)


def test_tiny_run_resumes_after_a_crash_and_exports(tmp_path, monkeypatch):
    corpus = tmp_path / 'corpus'
    corpus.mkdir()
    write_corpus(corpus)
    (corpus / 'valid-prose.txt').write_text(
        'Prose is not code at all.' + SEPARATOR + 'Neither is this.' + SEPARATOR)
    whole = run(tmp_path / 'whole', corpus)
    assert whole['step'] == 6 and np.isfinite(whole['eval_loss'])
    log = [json.loads(l) for l in (tmp_path / 'whole/eval_log.jsonl').open()]
    assert [r['step'] for r in log] == [3, 6]
    # Each held-out file is a source; the overall loss lies between them.
    by_source = whole['eval_loss_by_source']
    assert sorted(by_source) == ['code', 'prose'] == sorted(log[-1]['eval_loss_by_source'])
    assert by_source['code'] < by_source['prose']  # Trained on code only.
    assert by_source['code'] < whole['eval_loss'] < by_source['prose']

    # The same run with its batch split over two CPU devices (a process of
    # its own: devices are fixed at start-up) ends at the same losses.
    out = subprocess.run(
        [sys.executable, '-m', 'lm.pretrain', '--cpu_devices=2',
         '--gin_file=gin/lm/pretrain_tiny.gin', f'--workdir={tmp_path / "two"}',
         f"--gin_bindings=CORPUS_DIR = '{corpus}'"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'batch split over 2 device(s)' in out.stderr
    two = [json.loads(l) for l in (tmp_path / 'two/eval_log.jsonl').open()]
    for a, b in zip(log, two):
        np.testing.assert_allclose(a['eval_loss'], b['eval_loss'], rtol=2e-4)

    # Crash right after the first checkpoint, then start again: same result.
    save = checkpoints.CheckpointManager.save

    def crash_after_saving(*args, **kwargs):
        save(*args, **kwargs)
        raise KeyboardInterrupt('killed')

    monkeypatch.setattr(checkpoints.CheckpointManager, 'save',
                        crash_after_saving)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / 'resumed', corpus)
    monkeypatch.setattr(checkpoints.CheckpointManager, 'save', save)
    resumed = run(tmp_path / 'resumed', corpus)
    assert resumed == whole
    for name in ('params.safetensors', 'tokenizer.json'):
        assert ((tmp_path / 'whole/export' / name).read_bytes()
                == (tmp_path / 'resumed/export' / name).read_bytes())

    lm = checkpoints.load_exported(str(tmp_path / 'whole/export'))
    assert lm.stop_strings == ('"""Metrics:',)  # From the gin file.
    assert lm.vocab.encode('137') == [lm.vocab.tokenizer.token_to_id('137')]
    texts = lm.generate(['def f'], num_samples=2, max_new_tokens=8,
                        temperatures=[0.0, 1.0], rng=jax.random.key(0))
    assert len(texts) == 1 and len(texts[0]) == 2


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='no text files'):
        run(tmp_path / 'w', tmp_path / 'missing')
    with pytest.raises(FileNotFoundError, match='config.json is missing'):
        checkpoints.load_exported(str(tmp_path))
