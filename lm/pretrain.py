r"""Pretrains a small decoder on text files: the project's embedded default LM.

    python -m lm.pretrain --gin_file=gin/lm/pretrain_default.gin --workdir=DIR \
        [--gin_bindings='pretrain.train.num_steps=100']

Text files hold documents, each followed by a separator string (the corpus
of `python -m evoprompting.corpus` uses '<|endoftext|>'); the EOS token
takes the separator's place, so the model learns where a document ends.
This module knows nothing of what the documents are.

Steps (all settings are arguments of `train`, bound by gin):
  1. Tokenizer: a byte-level BPE (`lm.vocab.train_byte_level_bpe`) trained
     on the training text, with the integers 0..`whole_numbers` as single
     tokens (splitting numbers into pieces made a small model loop and write
     impossible numbers); saved as DIR/tokenizer.json and reused on resume.
  2. Data: every document is encoded, followed by EOS, and packed into
     rows of `seq_len + 1` tokens without cutting documents that fit in a
     row (`pack`), one segment id per document (attention never crosses
     documents; the first token of a document is never predicted from the
     previous one).
  3. Training: next-token cross-entropy, AdamW with linear warmup and
     cosine decay, gradient clipping. `train_step(state, rows, rng)` is one
     jitted pure function: step `s` draws its batch of rows with
     `fold_in(rng, s)`, so a resumed run repeats the same batches.
  4. Every `eval_every` steps: the mean held-out loss (nats/token) of each
     eval file (a data source: `valid-mnist1d.txt`, `valid-clrs.txt`,
     `valid-code.txt` for the project's corpus) and over all of them, and a
     checkpoint (orbax's CheckpointManager, `lm.checkpoints`) of the whole
     training state in DIR/checkpoints/<step>, the last two kept; a run
     killed at any moment, even during a save, resumes from its newest
     complete checkpoint when started again. Progress (step, loss, speed,
     ETA) goes to absl logging; DIR/eval_log.jsonl keeps the curves.
     The batch is split over the local devices (`num_devices`; on a CPU
     host `--cpu_devices` splits the CPU), without changing the result.
  5. Export to DIR/export (`lm.checkpoints.export`): config.json, params and
     tokenizer.json, loadable by `lm.checkpoints.load_exported`.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import glob
import json
import math
import os
import time
from typing import Any, Sequence

from absl import logging
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lm import checkpoints
from lm import model as model_lib
from lm import partitioning
from lm import vocab as vocab_lib

CHECKPOINTS_DIR = 'checkpoints'
CHECKPOINTS_KEPT = 2


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the text is and how it is cut.

    Attributes:
      directory: the folder of the text files.
      train_files: glob (in `directory`) of training text files.
      eval_files: glob (in `directory`) of held-out text files; each file
        is evaluated on its own as one data source (`valid-clrs.txt` is
        source 'clrs', `valid.txt` source 'valid').
      separator: the string that ends every document in the files.
      seq_len: tokens per training row (the model's context).
    """

    directory: str
    train_files: str = 'train-*.txt'
    eval_files: str = 'valid*.txt'
    separator: str = '<|endoftext|>'
    seq_len: int = 1024


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    """The BPE tokenizer trained on the training text.

    Attributes:
      vocab_size: tokens in all (specials, bytes, merges, whole numbers).
      whole_numbers: the integers 0..whole_numbers are single tokens; -1 for none.
      sample_chars: characters of training text the BPE trainer reads.
    """

    vocab_size: int = 1536
    whole_numbers: int = 300
    sample_chars: int = 4_000_000


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW with linear warmup then cosine decay to `final_fraction` of the peak."""

    learning_rate: float = 3e-3
    warmup_steps: int = 100
    final_fraction: float = 0.1
    weight_decay: float = 0.1
    clip_norm: float = 1.0
    b2: float = 0.98


class TrainState(flax.struct.PyTreeNode):
    """Everything a resumed run needs (besides the data, rebuilt from files)."""

    step: jax.Array
    params: Any
    opt_state: Any


def read_documents(pattern: str, separator: str) -> list[str]:
    """The non-empty documents of the files matching `pattern`, in file-name order."""
    paths = sorted(glob.glob(pattern))
    if not paths:
        raise FileNotFoundError(f'no text files match {pattern!r}')
    documents = []
    for path in paths:
        with open(path, encoding='utf-8') as f:
            documents += [d for d in f.read().split(separator) if d.strip()]
    if not documents:
        raise ValueError(f'the files matching {pattern!r} hold no documents')
    return documents


def pack(documents: Sequence[str], vocab: vocab_lib.Vocabulary,
         seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `seq_len + 1` tokens and their segment ids (see module docstring).

    Documents are never cut where it can be helped: each document (with its
    EOS) goes whole into one row, so an episode's parents and child stay in
    one context; only documents longer than a row are cut into row-sized
    pieces. Pieces are packed best-fit decreasing (the longest first, each
    into the fullest row it fits), which fills rows much better than
    appending in order (the default corpus: 99.7% of the slots hold tokens
    instead of 74%). Rows come out in a fixed order (a function of the
    documents), as the training's row draws need.

    Returns:
      (tokens, segment_ids), both `[rows, seq_len + 1]` int32. Every document
      piece has its own segment id (1, 2, ... within its row); padding has
      segment 0 and the PAD token.
    """
    width = seq_len + 1
    pieces = []
    for document in documents:
        ids = vocab.encode(document) + [vocab.eos_id]
        pieces += [ids[i:i + width] for i in range(0, len(ids), width)]
    rows: list[list[list[int]]] = []
    free: list[tuple[int, int]] = []  # (room left, row index), sorted.
    for i in sorted(range(len(pieces)), key=lambda i: (-len(pieces[i]), i)):
        piece = pieces[i]
        at = bisect.bisect_left(free, (len(piece), -1))
        if at < len(free):
            room, r = free.pop(at)
        else:
            room, r = width, len(rows)
            rows.append([])
        rows[r].append(piece)
        if room - len(piece):
            bisect.insort(free, (room - len(piece), r))
    tokens = np.full((len(rows), width), vocab.pad_id, np.int32)
    segments = np.zeros((len(rows), width), np.int32)
    for r, row in enumerate(rows):
        at = 0
        for segment, piece in enumerate(row, start=1):
            tokens[r, at:at + len(piece)] = piece
            segments[r, at:at + len(piece)] = segment
            at += len(piece)
    return tokens, segments


def loss_fn(params: Any, model: model_lib.Transformer, tokens: jax.Array,
            segment_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(summed next-token cross-entropy, number of predicted tokens) of rows
    `[B, seq_len + 1]`; a token is predicted only from its own document."""
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    logits = model.apply({'params': params}, inputs, segment_ids=segment_ids[:, :-1])
    weights = ((segment_ids[:, 1:] == segment_ids[:, :-1])
               & (segment_ids[:, 1:] > 0)).astype(jnp.float32)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return jnp.sum(losses * weights), jnp.sum(weights)


def make_optimizer(config: OptimizerConfig, num_steps: int
                   ) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.learning_rate,
        warmup_steps=config.warmup_steps, decay_steps=max(num_steps, config.warmup_steps + 1),
        end_value=config.learning_rate * config.final_fraction)
    decay_mask = lambda params: jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)
    return optax.chain(
        optax.clip_by_global_norm(config.clip_norm),
        optax.adamw(schedule, b2=config.b2, weight_decay=config.weight_decay,
                    mask=decay_mask))


def train_step(state: TrainState, rows: tuple[jax.Array, jax.Array],
               rng: jax.Array, *, model: model_lib.Transformer,
               optimizer: optax.GradientTransformation, batch_size: int,
               batch_sharding: jax.sharding.Sharding | None = None
               ) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on `batch_size` rows drawn with `fold_in(rng, step)`.

    With `batch_sharding`, the drawn rows are split over its devices (data
    parallel: each device computes its rows' gradients; XLA sums them); the
    result does not depend on the split (up to float summation order)."""
    tokens, segment_ids = rows
    index = jax.random.randint(jax.random.fold_in(rng, state.step), (batch_size,),
                               0, tokens.shape[0])
    batch_tokens, batch_segments = tokens[index], segment_ids[index]
    if batch_sharding is not None:
        batch_tokens = jax.lax.with_sharding_constraint(batch_tokens, batch_sharding)
        batch_segments = jax.lax.with_sharding_constraint(batch_segments,
                                                          batch_sharding)

    def mean_loss(params):
        total, count = loss_fn(params, model, batch_tokens, batch_segments)
        return total / jnp.maximum(count, 1.0)

    loss, grads = jax.value_and_grad(mean_loss)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return (TrainState(step=state.step + 1, params=params, opt_state=opt_state),
            {'loss': loss, 'grad_norm': optax.global_norm(grads)})


@functools.partial(jax.jit, static_argnames=('model',))
def _eval_batch(params, model, tokens, segment_ids):
    return loss_fn(params, model, tokens, segment_ids)


def evaluate(params: Any, model: model_lib.Transformer, tokens: np.ndarray,
             segment_ids: np.ndarray, batch_size: int) -> tuple[float, float]:
    """(summed next-token loss in nats, predicted tokens) over all rows, in
    fixed-size batches."""
    total, count = 0.0, 0.0
    for start in range(0, len(tokens), batch_size):
        t, s = tokens[start:start + batch_size], segment_ids[start:start + batch_size]
        short = batch_size - len(t)  # Zero segments: padding rows count nothing.
        t = np.pad(t, ((0, short), (0, 0)))
        s = np.pad(s, ((0, short), (0, 0)))
        batch_total, batch_count = _eval_batch(params, model, t, s)
        total += float(batch_total)
        count += float(batch_count)
    return total, count


def evaluate_sources(params: Any, model: model_lib.Transformer,
                     sources: dict[str, tuple[np.ndarray, np.ndarray]],
                     batch_size: int) -> tuple[float, dict[str, float]]:
    """(mean loss over all held-out tokens, mean loss of each source)."""
    sums = {name: evaluate(params, model, *rows, batch_size)
            for name, rows in sources.items()}
    total = sum(t for t, _ in sums.values())
    count = sum(c for _, c in sums.values())
    return (total / max(count, 1.0),
            {name: t / max(c, 1.0) for name, (t, c) in sums.items()})


def source_name(path: str) -> str:
    """The data source a held-out file holds: `valid-<name>.txt` -> name."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return stem[len('valid-'):] if stem.startswith('valid-') else stem


def _tokenizer(workdir: str, documents: Sequence[str], config: TokenizerConfig,
               rng: np.random.Generator) -> vocab_lib.TokenizerVocabulary:
    path = os.path.join(workdir, 'tokenizer.json')
    if os.path.exists(path):
        return vocab_lib.TokenizerVocabulary.from_file(
            path, eos_token='<eos>', pad_token='<pad>')
    sample, chars = [], 0
    for i in rng.permutation(len(documents)):
        if chars >= config.sample_chars:
            break
        sample.append(documents[i])
        chars += len(documents[i])
    vocab = vocab_lib.train_byte_level_bpe(
        sample, vocab_size=config.vocab_size,
        whole_tokens=[str(i) for i in range(config.whole_numbers + 1)])
    vocab.save(path + '.tmp')
    os.replace(path + '.tmp', path)
    return vocab


def _progress(step: int, num_steps: int, loss: float, seconds_per_step: float) -> str:
    done = step / num_steps
    bar = '=' * int(30 * done) + ' ' * (30 - int(30 * done))
    eta = int(seconds_per_step * (num_steps - step))
    return (f'[{bar}] step {step}/{num_steps} ({100 * done:.1f}%) loss {loss:.4f} '
            f'{seconds_per_step:.2f} s/step ETA {eta // 60}m{eta % 60:02d}s')


def train(*, workdir: str, data: DataConfig, model: model_lib.TransformerConfig,
          num_steps: int, batch_size: int, tokenizer: TokenizerConfig = TokenizerConfig(),
          optimizer: OptimizerConfig = OptimizerConfig(), eval_every: int = 200,
          max_eval_rows: int = 64, log_every: int = 10, seed: int = 0,
          serving_options: dict[str, Any] | None = None,
          num_devices: int = 0) -> dict[str, Any]:
    """Trains (or resumes) in `workdir` and exports; returns final metrics.

    Args:
      workdir: folder of the run (tokenizer, checkpoint, eval log, export).
      data: the text files.
      model: the decoder; `vocab_size` must be >= the tokenizer's and
        `max_len` >= `data.seq_len`.
      num_steps: optimizer steps in all (a resumed run continues to it).
      batch_size: rows per step.
      tokenizer: the tokenizer trained on first start.
      optimizer: AdamW settings.
      eval_every: steps between held-out evaluations and checkpoints.
      max_eval_rows: held-out rows evaluated (the first ones) of each
        source, to bound the time evaluation takes.
      log_every: steps between progress lines.
      seed: seeds the tokenizer's text sample, the initialisation and the
        batches.
      serving_options: `LanguageModel` options stored with the export (e.g.
        stop strings); the loader applies them unless overridden.
      num_devices: local devices the batch is split over (data parallel);
        0: the most that divide `batch_size`. On a CPU host, split the CPU
        into devices first (`--cpu_devices`). The run's result does not
        depend on it, so a run may resume on another number of devices.

    Returns:
      {'step', 'eval_loss', 'eval_loss_by_source', 'eval_perplexity',
       'train_loss', 'params'}.
    """
    if model.max_len < data.seq_len:
        raise ValueError(f'model max_len {model.max_len} < seq_len {data.seq_len}')
    if num_steps < 1 or batch_size < 1 or eval_every < 1:
        raise ValueError('num_steps, batch_size and eval_every must be positive')
    os.makedirs(workdir, exist_ok=True)
    train_docs = read_documents(os.path.join(data.directory, data.train_files),
                                data.separator)
    eval_paths = sorted(glob.glob(os.path.join(data.directory, data.eval_files)))
    if not eval_paths:
        raise FileNotFoundError(f'no held-out files match {data.eval_files!r} '
                                f'in {data.directory}')
    vocab = _tokenizer(workdir, train_docs, tokenizer, np.random.default_rng(seed))
    if vocab.vocab_size > model.vocab_size:
        raise ValueError(f'the tokenizer has {vocab.vocab_size} tokens, more than '
                         f'the model\'s vocab_size {model.vocab_size}')
    train_rows = pack(train_docs, vocab, data.seq_len)
    eval_sources = {
        source_name(path): tuple(a[:max_eval_rows] for a in pack(
            read_documents(path, data.separator), vocab, data.seq_len))
        for path in eval_paths}
    logging.info('data: %d training rows of %d tokens (%.1f%% of the slots '
                 'hold tokens), held-out rows %s', len(train_rows[0]),
                 data.seq_len + 1, 100 * float(np.mean(train_rows[1] > 0)),
                 {k: len(v[0]) for k, v in eval_sources.items()})
    mesh = partitioning.make_mesh(num_devices or max(
        n for n in range(1, len(jax.local_devices()) + 1) if batch_size % n == 0))
    if batch_size % mesh.size:
        raise ValueError(f'num_devices={mesh.size} must divide batch_size '
                         f'{batch_size}')
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    batch_sharding = jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec(partitioning.MESH_AXES[0]))

    module = model_lib.Transformer(model)
    opt = make_optimizer(optimizer, num_steps)
    rng = jax.random.key(seed)
    init_rng, data_rng = jax.random.split(rng)

    def init_state(key):
        params = partitioning.strip_boxes(model_lib.init_params(model, key))
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=opt.init(params))

    manager = checkpoints.CheckpointManager(
        os.path.join(workdir, CHECKPOINTS_DIR), max_to_keep=CHECKPOINTS_KEPT)
    if manager.steps():
        # Stored as a state dict (optax states are namedtuples, which orbax
        # stores as dicts): restore into the abstract state's state dict.
        abstract = jax.eval_shape(init_state, init_rng)
        stored = manager.restore(manager.steps()[-1],
                                 flax.serialization.to_state_dict(abstract))
        state = flax.serialization.from_state_dict(abstract, stored)
        logging.info('resumed from step %d', int(state.step))
    else:
        state = jax.jit(init_state)(init_rng)
    state = jax.device_put(state, replicated)
    num_params = partitioning.count_params(state.params)
    logging.info('model: %d parameters; batch split over %d device(s)',
                 num_params, mesh.size)

    step_fn = jax.jit(functools.partial(
        train_step, model=module, optimizer=opt, batch_size=batch_size,
        batch_sharding=batch_sharding if mesh.size > 1 else None),
        donate_argnums=0)
    device_rows = jax.device_put(train_rows, replicated)
    log_path = os.path.join(workdir, 'eval_log.jsonl')
    step = int(state.step)
    eval_loss = train_loss = float('nan')
    tic, tic_step = time.time(), step
    while step < num_steps:
        state, metrics = step_fn(state, device_rows, data_rng)
        step += 1
        if step % log_every == 0 or step == num_steps:
            train_loss = float(metrics['loss'])
            seconds = (time.time() - tic) / max(1, step - tic_step)
            logging.info('%s', _progress(step, num_steps, train_loss, seconds))
            tic, tic_step = time.time(), step
        if step % eval_every == 0 or step == num_steps:
            eval_loss, by_source = evaluate_sources(state.params, module,
                                                    eval_sources, batch_size)
            logging.info('step %d: held-out loss %.4f (perplexity %.3f); %s',
                         step, eval_loss, math.exp(eval_loss),
                         ', '.join(f'{k} {v:.4f}' for k, v in by_source.items()))
            manager.save(step, flax.serialization.to_state_dict(state))
            with open(log_path, 'a', encoding='utf-8') as f:
                f.write(json.dumps({'step': step, 'eval_loss': eval_loss,
                                    'eval_loss_by_source': by_source,
                                    'train_loss': float(metrics['loss']),
                                    'time': time.time()}) + '\n')
            tic, tic_step = time.time(), step
    if math.isnan(eval_loss):  # Resumed at the end: measure once more.
        eval_loss, by_source = evaluate_sources(state.params, module,
                                                eval_sources, batch_size)
    checkpoints.export(os.path.join(workdir, 'export'), model, state.params, vocab,
                       serving_options=serving_options or {})
    return {'step': step, 'eval_loss': eval_loss,
            'eval_loss_by_source': by_source,
            'eval_perplexity': math.exp(eval_loss), 'train_loss': train_loss,
            'params': num_params}


if __name__ == '__main__':
    from absl import app, flags  # pylint: disable=g-import-not-at-top
    import gin  # pylint: disable=g-import-not-at-top

    flags.DEFINE_multi_string('gin_file', None, 'Gin files, applied in order; '
                              'relative paths are also looked up in the repository.')
    flags.DEFINE_multi_string('gin_bindings', [], 'Gin bindings after the files.')
    flags.DEFINE_string('workdir', None, 'Run folder (created; resumed if present).')
    flags.DEFINE_integer('cpu_devices', 0, 'On a CPU-only machine, JAX devices the '
                         'host is split into (0: one per core); the batch is '
                         'split over them (pretrain.train.num_devices).')
    flags.mark_flags_as_required(['gin_file', 'workdir'])

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f'unexpected arguments: {argv[1:]}')
        partitioning.set_cpu_device_count(flags.FLAGS.cpu_devices)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        gin.add_config_file_search_path(root)
        files = [f if os.path.isfile(f) else os.path.join(root, f)
                 for f in flags.FLAGS.gin_file]
        gin.parse_config_files_and_bindings(files, flags.FLAGS.gin_bindings)
        os.makedirs(flags.FLAGS.workdir, exist_ok=True)
        with open(os.path.join(flags.FLAGS.workdir, 'config.gin'), 'w',
                  encoding='utf-8') as f:
            f.write(gin.config_str())
        # Gin registered the importable module's `train`, not `__main__`'s.
        from lm import pretrain  # pylint: disable=g-import-not-at-top,import-self
        result = gin.get_configurable(pretrain.train)(workdir=flags.FLAGS.workdir)
        logging.info('done: %s', json.dumps(result))

    app.run(main)
