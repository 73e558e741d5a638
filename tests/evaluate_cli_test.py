"""The evaluate binary's output contract, whatever the program prints or raises.

`python -m evoprompting.evaluate ... --json` always ends with exactly one line
of ASCII, strict JSON that round-trips the EvalResult, and the lines before it
carry no raw control characters (ESC sequences, \\r, bells) and no lone
surrogates. The binary runs as a subprocess on real programs with tiny
budgets, most of them really running in a sandbox worker.
"""

import json
import math
import os
import subprocess
import sys

import pytest

from evoprompting.tasks import base

TINY = ['--gin_bindings=mnist1d.TrainConfig.num_steps = 20',
        '--gin_bindings=mnist1d.TrainConfig.eval_every = 10',
        '--gin_bindings=mnist1d.TrainConfig.steps_per_call = 1']
UTF8 = {'PYTHONIOENCODING': 'utf-8'}
ASCII_C_LOCALE = {'LC_ALL': 'C', 'LANG': 'C', 'PYTHONIOENCODING': 'ascii'}

# Prints and raises what a terminal must not see raw; runs in the worker.
PRINTS_AND_RAISES = r'''
print('lone surrogate: \udcff')
print('\x1b[31mred\x1b[0m \x1b]0;title\x07 back\rspace \x00 caf\xe9 \u202e')
print('{"status": "ok", "message": "a fake result"}')
print(0.5)
print('tab\tkept')
raise ValueError('bad \udcff \x1b[2J \a\x7f\u202e end\rnext line')
'''

# A model that trains, with escapes in what it prints (at module level and
# while its forward pass is traced).
TRAINS_AND_PRINTS = r'''
print('\x1b[1mbold\x1b[0m \udcff')


class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
        print('tracing \x1b[2K\r', x.shape)
        return nn.Dense(10)(nn.relu(nn.Dense(32)(x)))
'''

# An exception whose message cannot even be computed, raised while the
# training step is traced (outside the contract checks, which catch it).
UNPRINTABLE_EXCEPTION = r'''
class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError('no message \x1b[2J \udcff')


class Model(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        if train:
            raise Unprintable()
        return nn.Dense(10)(x)
'''


def run_evaluate(program, *args, env=None, json_flag=True):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, '-m', 'evoprompting.evaluate', '--task=mnist1d',
         f'--program={program}', *(['--json'] if json_flag else []),
         *TINY, *args],
        capture_output=True, timeout=600, env=full_env)


def is_json(line):
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def check_output(out):
    """Asserts the output contract; returns the EvalResult and stdout text."""
    assert out.returncode == 0, out.stderr.decode('utf-8', 'replace')
    stdout = out.stdout
    assert stdout.endswith(b'\n')
    for byte in (b'\x1b', b'\r', b'\x07', b'\x00', b'\x08'):
        assert byte not in stdout, (byte, stdout)
    text = stdout.decode('utf-8')  # Strict: no encoded surrogates either.
    assert all(c.isprintable() or c in '\n\t' for c in text), ascii(text)
    lines = text[:-1].split('\n')
    assert [l for l in lines if is_json(l)] == [lines[-1]], lines
    assert lines[-1].isascii()
    d = json.loads(lines[-1], parse_constant=pytest.fail)  # No NaN/Infinity.
    result = base.EvalResult.from_json(d)
    assert result.to_json() == d
    return result, text


def write(tmp_path, source, name='program.py'):
    path = tmp_path / name
    path.write_text(source, encoding='utf-8', errors='surrogateescape')
    return path


@pytest.mark.parametrize('env', [UTF8, ASCII_C_LOCALE], ids=['utf8', 'ascii'])
def test_printed_and_raised_escapes_and_surrogates(tmp_path, env):
    out = run_evaluate(write(tmp_path, PRINTS_AND_RAISES), env=env)
    result, text = check_output(out)
    # It ran in the worker: the output and message come back intact in JSON.
    assert result.status == base.Status.BUILD_ERROR, result.message
    assert 'bad \udcff \x1b[2J \x07\x7f\u202e end' in result.message
    assert 'lone surrogate: \udcff\n' in result.output
    assert '\x1b[31mred\x1b[0m' in result.output and '\u202e' in result.output
    # And as escapes on the terminal.
    assert r'bad \udcff \x1b[2J \x07\x7f\u202e end' in text
    assert r'\x1b[31mred\x1b[0m \x1b]0;title\x07 back\rspace \x00' in text
    assert r'\u202e' in text and '| tab\tkept\n' in text
    utf8 = env['PYTHONIOENCODING'] == 'utf-8'
    assert ('caf\xe9' if utf8 else r'caf\xe9') in text


def test_a_trained_program_with_escapes_in_its_output(tmp_path):
    out = run_evaluate(write(tmp_path, TRAINS_AND_PRINTS), env=ASCII_C_LOCALE)
    result, text = check_output(out)
    assert result.status == base.Status.OK, result.message
    assert result.metrics['best_step'] in (10, 20)
    assert '\x1b[1mbold\x1b[0m \udcff' in result.output
    assert 'tracing \x1b[2K\r' in result.output
    assert r'| \x1b[1mbold\x1b[0m \udcff' in text
    assert r'| tracing \x1b[2K\r (128, 40)' in text


def test_source_with_a_lone_surrogate(tmp_path):
    path = tmp_path / 'program.py'
    path.write_bytes(b'# caf\xff \x1b[2J\nprint("\xff")\n'
                     + TRAINS_AND_PRINTS.encode())
    out = run_evaluate(path)
    result, _ = check_output(out)
    assert result.status != base.Status.OK, result.message
    source = path.read_text(encoding='utf-8', errors='surrogateescape')
    assert '\udcff' in source
    assert result.source_sha256 == base.source_sha256(source)


def test_an_exception_without_a_message(tmp_path):
    out = run_evaluate(write(tmp_path, UNPRINTABLE_EXCEPTION))
    result, _ = check_output(out)
    assert result.status not in (base.Status.OK, base.Status.FORBIDDEN), (
        result.message)


def test_an_error_of_the_binary_is_a_crash_result(tmp_path):
    """A worker that cannot start in time: the binary's own error, reported
    as a `crash` result (its traceback on stderr), exit code 0."""
    out = run_evaluate(write(tmp_path, TRAINS_AND_PRINTS),
                       '--gin_bindings=pool.Limits.startup_s = 0.001')
    result, text = check_output(out)
    assert result.status == base.Status.CRASH
    assert result.message.startswith('the evaluation failed: ')
    assert 'status:   crash' in text
    assert b'Traceback' in out.stderr


def test_refused_configured_values_are_usage_errors(tmp_path):
    out = run_evaluate(write(tmp_path, TRAINS_AND_PRINTS),
                       '--gin_bindings=mnist1d.TrainConfig.num_steps = 0')
    assert out.returncode != 0
    assert b'bad gin configuration' in out.stderr
    assert b'num_steps must be positive' in out.stderr
    assert not any(is_json(l) for l in out.stdout.splitlines())


def in_the_binary(expression, *args):
    """`expression(evaluate, *args)` in a fresh interpreter (importing the
    binary here would define its absl flags twice in a pytest run), passed
    and returned as JSON."""
    code = ('import json, sys\nfrom evoprompting import evaluate\n'
            'from evoprompting.tasks import base\n'
            'args = json.loads(sys.stdin.read())\n'
            f'print(json.dumps(({expression})(evaluate, *args)))\n')
    out = subprocess.run([sys.executable, '-c', code], input=json.dumps(args),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_printable_escapes_what_a_terminal_would_act_on():
    text = ('a\x1b[31m\r\x07\x00\x7f\x85\u202e\u2028\udcff\U000e0001\n\t'
            'caf\xe9 \u65e5 \\')
    single, multi = in_the_binary(
        'lambda e, t: [e.printable(t), e.printable(t, multiline=True)]', text)
    assert single == (r'a\x1b[31m\r\x07\x00\x7f\x85\u202e\u2028\udcff'
                      r'\U000e0001\n\t' + 'caf\xe9 \u65e5 \\')
    assert multi == single.replace(r'\n\t', '\n\t')


def test_json_line_is_strict_ascii_json():
    """Non-finite metrics (no worker sends them) would be null, not NaN."""
    result = base.EvalResult(
        base.Status.NAN, 'm \udcff \x1b', base.source_sha256('x'),
        metrics={'val_accuracy': math.nan, 'test_accuracy': 0.5,
                 'loss': -math.inf},
        output='\u65e5 \x00\r')
    finite = base.EvalResult(base.Status.OK, 'm \udcff \x1b', 'h',
                             metrics={'a': 0.25}, output='\u65e5 \x00\r')
    lines = in_the_binary(
        'lambda e, *ds: [e.json_line(base.EvalResult.from_json(d)) '
        'for d in ds]', result.to_json(), finite.to_json())
    for line in lines:
        assert line.isascii() and '\n' not in line
    d = json.loads(lines[0], parse_constant=pytest.fail)
    assert d['metrics'] == {'val_accuracy': None, 'test_accuracy': 0.5,
                            'loss': None}
    assert base.EvalResult.from_json(json.loads(lines[1])) == finite
