"""The LM benchmark scripts run end to end at tiny sizes (real sampling and
tuning of the benchmark Llama with random JAX weights, no transformers; real
children of the embedded default model, built in the script's worker
process), and lm_decode.py's memory-bandwidth bound, the column a GPU run
reports, is the bytes of a step worked out here from the architecture."""

import json
import os
import re
import subprocess
import sys

import pytest

from clrs_tasks import _clrs_import
from evoprompting import gin_utils

BENCHMARKS = os.path.join(gin_utils.REPO_ROOT, 'benchmarks')


def run_benchmark(script, *flags):
    done = subprocess.run([sys.executable, os.path.join(BENCHMARKS, script), *flags],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()


def test_lm_decode_reports_the_bandwidth_bound_fraction(tmp_path):
    out = tmp_path / 'decode.json'
    batch_sizes, prompt, new, peak_gbs = (1, 2), 16, 4, 20.0
    lines = run_benchmark(
        'lm_decode.py', f'--batch_sizes={",".join(map(str, batch_sizes))}',
        f'--prompt_length={prompt}',
        f'--new_tokens={new}', '--repeats=2', '--torch_python=none',
        f'--peak_bandwidth_gbs={peak_gbs}', f'--json_out={out}')
    assert lines[-1].startswith('SUMMARY: ')
    assert 'best bandwidth-bound fraction' in lines[-1]
    assert 'no transformers comparison' in lines[-1]
    assert any(line.endswith(' bw bound |') for line in lines)

    # The benchmark Llama (lm_bench_model.MODEL; untied embeddings, no
    # biases): parameters, and key/value bytes per row and slot, float32.
    vocab, embed, layers, heads, kv_heads, mlp = 4096, 256, 6, 8, 4, 704
    head_dim = embed // heads
    params = 2 * vocab * embed + embed + layers * (
        embed * heads * head_dim + 2 * embed * kv_heads * head_dim
        + heads * head_dim * embed + 3 * embed * mlp + 2 * embed)
    assert params == 6_524_160
    kv_per_slot = layers * 2 * kv_heads * head_dim * 4
    rows = json.loads(out.read_text())
    assert [r['batch'] for r in rows] == list(batch_sizes)
    for r in rows:
        step_bytes = 4 * params + r['batch'] * (prompt + new / 2) * kv_per_slot
        assert r['bandwidth_bound'] == pytest.approx(
            r['batch'] * peak_gbs * 1e9 / step_bytes, rel=1e-9)
        assert len(r['ours']) == 2 and min(r['ours']) > 0
        assert r['recompiles'] == 0 and r['torch'] == []


def test_lm_decode_has_no_bound_column_on_cpu_by_default():
    lines = run_benchmark('lm_decode.py', '--batch_sizes=1', '--prompt_length=8',
                          '--new_tokens=2', '--repeats=1', '--torch_python=none')
    assert lines[-1].startswith('SUMMARY: ') and 'bandwidth' not in lines[-1]
    assert not any('bw bound' in line for line in lines)


def test_prompt_tuning_benchmark_tunes_without_recompiling(tmp_path):
    out = tmp_path / 'tuning.json'
    lines = run_benchmark(
        'prompt_tuning.py', '--num_examples=4', '--num_epochs=2',
        '--prompt_tokens=40', '--target_tokens=10', '--repeats=1',
        '--torch_python=none', f'--json_out={out}')
    assert lines[-1].startswith('SUMMARY: ') and 'examples/s' in lines[-1]
    result = json.loads(out.read_text())
    # 4 examples fit one batch of 16: one step per epoch.
    assert result['steps'] == 2 and result['recompiles'] == 0
    assert len(result['examples_per_s']) == 1 and result['examples_per_s'][0] > 0
    assert len(result['epoch_loss']) == 2


def test_lm_children_reports_the_three_rates_per_setting(tmp_path):
    table = tmp_path / 'table.md'
    lines = run_benchmark('lm_children.py', '--prompt_set=handwritten',
                          '--num_prompts=2', '--samples=1',
                          '--copy_weight=0,0.7', f'--table_out={table}')
    rows = [line.split('|')[0].strip() for line in lines if line.count('|') == 6]
    assert any(line.startswith('corpus NOT checked') for line in lines)
    # Per setting: the header, the paper's four temperatures and the pool.
    assert rows == 2 * ['temperature', '0.2', '0.6', '0.8', '1.0', 'all']
    summary = lines[-1]
    assert summary.startswith(
        'SUMMARY lm_children (handwritten: 2 prompts x 4 samples, default')
    rates = re.findall(r'copy ([\d.]+) half-life (\d+): valid (\d+)%, '
                       r'a parent verbatim (\d+)%; of novel valid: '
                       r'parent-conditioned (\d+)% \(gross (\d+)%, control '
                       r'(\d+)%\), within 2x (\d+)% \(gross (\d+)%\)', summary)
    assert [r[:2] for r in rates] == [('0', '0'), ('0.7', '20')]
    # Of the default model's 16 children of hand-written parents, some build
    # (each in a sandbox worker, under the MNIST-1D contract).
    assert any(int(r[2]) > 0 for r in rates)
    # The README's table, with its command, commit and machine.
    written = table.read_text().splitlines()
    assert written[0].startswith('`python benchmarks/lm_children.py '
                                 '--prompt_set=handwritten --num_prompts=2 '
                                 '--samples=1 --copy_weight=0,0.7` at commit ')
    assert [row.split('|')[1].strip() for row in written[4:]] == [
        'off', '0.7, min match 8, half-life 20']
    assert written[4].split('|')[2].strip() == f'{rates[0][2]}%'


@pytest.mark.slow  # The default suite runs the MNIST-1D prompt sets.
@pytest.mark.skipif(not _clrs_import.installed(),
                    reason='dm-clrs (the clrs extra) is not installed')
def test_lm_children_on_clrs_prompts_builds_children_under_the_triplet_contract():
    # The default model's 1,024-token context holds two hand-written triplet
    # functions only with little room left: 64 new tokens.
    lines = run_benchmark('lm_children.py', '--prompt_set=clrs', '--num_prompts=1',
                          '--samples=1', '--copy_weight=0.7', '--max_new_tokens=64')
    assert any(line.startswith('1 clrs prompts; target sizes') for line in lines)
    rows = [line.split('|')[0].strip() for line in lines if line.count('|') == 6]
    assert rows == ['temperature', '0.2', '0.6', '0.8', '1.0', 'all']
    assert lines[-1].startswith('SUMMARY lm_children (clrs: 1 prompts x 4 samples')
