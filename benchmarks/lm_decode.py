r"""Decoding speed of `lm.sampler.sample` against transformers `generate`.

  python benchmarks/lm_decode.py [--batch_sizes=1,16] [--prompt_length=512]
      [--new_tokens=256] [--repeats=3] [--torch_python=PATH|none]
      [--checkpoint=HF_FOLDER] [--dtype=float32] [--peak_bandwidth_gbs=GBS]
      [--cpu_devices=0] [--json_out=PATH]

The model (benchmarks/lm_bench_model.py): by default a random 6.5M-parameter
Llama made by transformers under `--torch_python` and imported with
`lm.checkpoints.load_hf`, or any Hugging Face folder given as `--checkpoint`.
Both sides decode the same random prompts (`--prompt_length` tokens, no
padding) by sampling at temperature 1 with no top-k / top-p filter, every
row generating exactly `--new_tokens` tokens: EOS is disabled (our
`eos_id=-1`, an id no token has; transformers' `min_new_tokens`).

On CPU the host is split into `--cpu_devices` JAX devices (default: one per
core, `lm.partitioning.set_cpu_device_count`), and batch size B is served on
`lm.serving.default_mesh(B)`: data-parallel over the most devices that divide
B, as `LanguageModel` serves a batch by default. XLA:CPU runs much of a
decoding step on one thread per device, so this is how the sampler uses
several cores; `--cpu_devices=1` measures one device.

For each batch size B and each of `--repeats` rounds: our sampler (one
`jax.jit` program: prefill, then a `lax.while_loop` over the steps; compiled
and run once before the first timed call, and checked not to recompile), then
transformers in a subprocess (benchmarks/hf_reference.py `generate`:
`--torch_threads` intra-op threads, one warm-up generation per batch size).
The rounds interleave the two so that a change of load on a shared machine
hits both. `tokens/s` = B x new_tokens / wall time of the whole call, prefill
included, median over rounds; `ratio` = ours / transformers (target >= 2x on
CPU). `tokens/cpu-s` divides by the process's CPU time instead (all threads):
on a machine shared with other jobs, wall time measures the sharing as much as
the code (torch's 2 OpenMP threads suffer far more from oversubscription
than XLA's pool), so this column says how much work each side does per token.

On an accelerator, or on CPU when `--peak_bandwidth_gbs` is given, the table
adds `bw bound`: the fraction of the memory-bandwidth bound, i.e. measured
tokens/s over B x peak / (bytes read per step), where a step reads every
parameter once and the KV cache at its mean occupancy (prompt + new_tokens /
2 slots per row, keys and values, every layer); the peak is
`--peak_bandwidth_gbs` (default on an accelerator: H100 SXM, 3,350 GB/s).
For a sweep: `--batch_sizes=1,2,4,8,16,32,64,128,256 --torch_python=none`.
The last line is one SUMMARY line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

from absl import app, flags

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import lm_bench_model  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import torch_subprocess  # pylint: disable=g-import-not-at-top,wrong-import-position

from lm import partitioning, sampler, serving  # pylint: disable=g-import-not-at-top,wrong-import-position

TARGET_RATIO = 2.0
H100_SXM_GBS = 3350.0

FLAGS = flags.FLAGS
flags.DEFINE_list('batch_sizes', ['1', '16'], 'Batch sizes to measure.')
flags.DEFINE_integer('prompt_length', 512, 'Prompt tokens per row.')
flags.DEFINE_integer('new_tokens', 256, 'Generated tokens per row.')
flags.DEFINE_integer('repeats', 3, 'Timed rounds (median reported).')
flags.DEFINE_string(
    'torch_python', '',
    "Interpreter with torch and transformers. '' uses this interpreter if it "
    "has them, else skips transformers (and makes the weights in JAX); 'none' "
    'skips transformers.')
flags.DEFINE_integer('torch_threads', 2, 'torch.set_num_threads for transformers.')
flags.DEFINE_string('checkpoint', '', 'Serve this Hugging Face folder instead '
                    'of a new random Llama.')
flags.DEFINE_enum('dtype', 'float32', list(lm_bench_model.DTYPES),
                  'Served dtype (ours only; transformers runs float32).')
flags.DEFINE_float('peak_bandwidth_gbs', None,
                   'Peak memory bandwidth in GB/s for the `bw bound` column. '
                   f'Default: {H100_SXM_GBS:,.0f} (H100 SXM) on an accelerator, '
                   'no column on CPU; 0: no column.', lower_bound=0.0)
flags.DEFINE_integer('cpu_devices', 0, 'On CPU, JAX devices the host is split '
                     'into (0: one per core); each batch size runs on '
                     '`serving.default_mesh(batch)` of them. 1 = the whole '
                     'batch on one device.',
                     lower_bound=0)
flags.DEFINE_integer('seed', 0, 'Seed of the weights, prompts and sampling.')
flags.DEFINE_string('json_out', '', 'Also write every measurement here.')


@dataclasses.dataclass
class Row:
    """All measurements of one batch size."""

    batch: int
    first_call_s: float | None = None
    ours: list[float] = dataclasses.field(default_factory=list)
    torch: list[float] = dataclasses.field(default_factory=list)
    ours_cpu: list[float] = dataclasses.field(default_factory=list)  # tokens/cpu-s
    torch_cpu: list[float] = dataclasses.field(default_factory=list)
    recompiles: int = 0
    bandwidth_bound: float | None = None  # tokens/s at peak bandwidth.

    def ratio(self) -> float | None:
        if self.ours and self.torch:
            return statistics.median(self.ours) / statistics.median(self.torch)
        return None

    def cpu_ratio(self) -> float | None:
        if self.ours_cpu and self.torch_cpu:
            return statistics.median(self.ours_cpu) / statistics.median(self.torch_cpu)
        return None


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _fmt(value, spec: str) -> str:
    return '-' if value is None else format(value, spec)


def bandwidth_bound(served, batch: int, prompt_length: int, new_tokens: int,
                    peak_bytes_per_s: float) -> float:
    """tokens/s at which one step's reads take exactly the peak bandwidth."""
    cfg = served.config
    param_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(served.params))
    slots = prompt_length + new_tokens / 2
    kv_bytes = (batch * slots * cfg.num_layers * 2 * cfg.num_kv_heads
                * cfg.head_dim * np.dtype(cfg.dtype).itemsize)
    return batch * peak_bytes_per_s / (param_bytes + kv_bytes)


def time_ours(served, prompts: np.ndarray, config: sampler.SamplingConfig,
              rng: jax.Array) -> tuple[float, float, int]:
    """(wall and CPU seconds of one `sample` call, recompilations it caused)."""
    batch = len(prompts)
    before = sampler.sample._cache_size()  # pylint: disable=protected-access
    with partitioning.activate(served.mesh, served.rules):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = sampler.sample(served.model, served.params, prompts,
                             np.ones(prompts.shape, bool), config=config,
                             temperatures=jnp.ones((batch,), jnp.float32), rng=rng)
        lengths = np.asarray(jax.device_get(out.lengths))
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - start_cpu
    if not (lengths == config.max_new_tokens).all():
        raise RuntimeError(f'rows generated {sorted(set(lengths))} tokens, '
                           f'expected {config.max_new_tokens}')
    return (seconds, cpu_seconds,
            sampler.sample._cache_size() - before)  # pylint: disable=protected-access


def table(rows: list[Row], bound_column: bool) -> str:
    header = ('| batch | ours tokens/s | transformers tokens/s | ratio | '
              'tokens/cpu-s ours / transformers (ratio) | '
              'first call s (compile + run) |' + (' bw bound |' if bound_column else ''))
    lines = [header, '|' + '---|' * (header.count('|') - 1)]
    for r in rows:
        ours = statistics.median(r.ours) if r.ours else None
        cpu = [statistics.median(x) if x else None for x in (r.ours_cpu, r.torch_cpu)]
        cpu_ratio = r.cpu_ratio()
        line = (f'| {r.batch} | {_fmt(ours, ",.0f")} | '
                f'{_fmt(statistics.median(r.torch) if r.torch else None, ",.0f")} | '
                f'{_fmt(r.ratio(), ".2f")}{"x" if r.ratio() else ""} | '
                f'{_fmt(cpu[0], ",.0f")} / {_fmt(cpu[1], ",.0f")} '
                f'({_fmt(cpu_ratio, ".2f")}{"x" if cpu_ratio else ""}) | '
                f'{_fmt(r.first_call_s, ".1f")} |')
        if bound_column:
            line += f' {_fmt(ours / r.bandwidth_bound if ours else None, ".1%")} |'
        lines.append(line)
    return '\n'.join(lines)


def summary(rows: list[Row], torch_note: str, device: str) -> str:
    parts = [f'{device}: ours ' + ', '.join(
        f'{statistics.median(r.ours):,.0f}' for r in rows if r.ours)
        + ' tokens/s at batch ' + ','.join(str(r.batch) for r in rows if r.ours)]
    ratios = [(r.ratio(), r.batch) for r in rows if r.ratio()]
    if ratios:
        low, where = min(ratios)
        parts.append(f'min ours/transformers {low:.2f}x (batch {where}; target >= '
                     f'{TARGET_RATIO:g}x {"met" if low >= TARGET_RATIO else "NOT met"})')
        low_cpu, where = min((r.cpu_ratio(), r.batch) for r in rows if r.cpu_ratio())
        parts.append(f'per CPU-second {low_cpu:.2f}x (batch {where})')
    else:
        parts.append(f'no transformers comparison ({torch_note})')
    fractions = [(statistics.median(r.ours) / r.bandwidth_bound, r.batch)
                 for r in rows if r.ours and r.bandwidth_bound]
    if fractions:
        best, where = max(fractions)
        parts.append(f'best bandwidth-bound fraction {best:.1%} (batch {where})')
    recompiles = sum(r.recompiles for r in rows)
    if recompiles:
        parts.append(f'{recompiles} RECOMPILES in timed calls')
    return 'SUMMARY: ' + '; '.join(parts)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    batch_sizes = [int(b) for b in FLAGS.batch_sizes]
    if min(batch_sizes) < 1:
        raise app.UsageError('batch sizes must be positive')
    partitioning.set_cpu_device_count(FLAGS.cpu_devices)
    torch_python, torch_note = torch_subprocess.find_torch_python(
        FLAGS.torch_python, ('torch', 'transformers', 'numpy'))
    device = f'{len(jax.devices())} x {jax.devices()[0].device_kind}'
    peak_gbs = FLAGS.peak_bandwidth_gbs
    if peak_gbs is None and jax.default_backend() != 'cpu':
        peak_gbs = H100_SXM_GBS
    log(f'jax {jax.__version__} on {jax.default_backend()} ({device}), '
        f'{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; '
        f'transformers: {torch_python or torch_note}')

    workdir = tempfile.mkdtemp(prefix='lm-decode-')
    try:
        served, folder, how = lm_bench_model.prepare(
            checkpoint=FLAGS.checkpoint, torch_python=torch_python,
            workdir=workdir, dtype=lm_bench_model.DTYPES[FLAGS.dtype],
            seed=FLAGS.seed)
        log(f'model: {how}; {served.config}')
        prompts = np.random.default_rng(FLAGS.seed).integers(
            3, served.config.vocab_size, (max(batch_sizes), FLAGS.prompt_length),
            dtype=np.int32)  # Ids 0-2 are the specials.
        prompts_path = os.path.join(workdir, 'prompts.npy')
        np.save(prompts_path, prompts)
        config = sampler.SamplingConfig(max_new_tokens=FLAGS.new_tokens, eos_id=-1,
                                        pad_id=served.vocab.pad_id)
        key = jax.random.key(FLAGS.seed)
        rows = [Row(b) for b in batch_sizes]
        served_at = {b: served.with_mesh(serving.default_mesh(b))
                     for b in batch_sizes}
        for row in rows:
            seconds, _, _ = time_ours(served_at[row.batch], prompts[:row.batch],
                                      config,
                                      jax.random.fold_in(key, 10_000 + row.batch))
            row.first_call_s = seconds
            if peak_gbs:
                row.bandwidth_bound = bandwidth_bound(
                    served, row.batch, FLAGS.prompt_length, FLAGS.new_tokens,
                    peak_gbs * 1e9)
            log(f'  batch {row.batch}: first call {seconds:.1f} s on '
                f'{served_at[row.batch].mesh.size} device(s)')
        for rep in range(FLAGS.repeats):
            for row in rows:
                seconds, cpu_seconds, recompiles = time_ours(
                    served_at[row.batch], prompts[:row.batch], config,
                    jax.random.fold_in(key, rep * 1000 + row.batch))
                row.ours.append(row.batch * FLAGS.new_tokens / seconds)
                row.ours_cpu.append(row.batch * FLAGS.new_tokens / cpu_seconds)
                row.recompiles += recompiles
            if torch_python:
                result = torch_subprocess.run_json(
                    torch_python, lm_bench_model.HF_SCRIPT,
                    ['generate', f'--checkpoint={folder}',
                     f'--prompts={prompts_path}',
                     f'--batch_sizes={",".join(map(str, batch_sizes))}',
                     f'--new_tokens={FLAGS.new_tokens}', '--repeats=1',
                     f'--threads={FLAGS.torch_threads}', f'--seed={FLAGS.seed + rep}'])
                for row in rows:
                    row.torch.extend(result['tokens_per_s'][str(row.batch)])
                    row.torch_cpu.extend(row.batch * FLAGS.new_tokens / s
                                         for s in result['cpu_s'][str(row.batch)])
            log(f'  round {rep + 1}/{FLAGS.repeats}: ' + '; '.join(
                f'batch {r.batch} ours {r.ours[-1]:,.0f}'
                + (f' transformers {r.torch[-1]:,.0f}' if r.torch else '')
                for r in rows) + f' tokens/s; load {os.getloadavg()[0]:.2f}')
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(f'{how}; prompt {FLAGS.prompt_length}, new tokens {FLAGS.new_tokens}, '
          f'{FLAGS.dtype}, {device}, median of {FLAGS.repeats}')
    print(table(rows, bool(peak_gbs)))
    if not torch_python:
        print(f'transformers not measured: {torch_note}')
    if FLAGS.json_out:
        with open(FLAGS.json_out, 'w', encoding='utf-8') as f:
            json.dump([dataclasses.asdict(r) for r in rows], f, indent=1)
    print(summary(rows, torch_note, device), flush=True)


if __name__ == '__main__':
    app.run(main)
