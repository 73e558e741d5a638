"""CLRS-30 through the search's machinery: hostile triplet programs in real
sandbox workers, `evaluate --task=clrs`, and a whole CLRS search with `main`."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from clrs_tasks import data
from clrs_tasks import task as task_lib
from clrs_tasks import train
from evoprompting import crossmut, prompts, report, search, store, summaries
from evoprompting.sandbox import evaluator, pool
from evoprompting.tasks import base, mnist1d
from lm import testing

S = base.Status
LIMITS = pool.Limits(wall_s=300, cpu_s=600, memory_mb=6144, startup_s=300,
                     output_chars=500)
# Tiny data and model: BFS, graphs of 8 nodes at test, hidden 8, 2 steps.
TINY_BINDINGS = [
    "task.ClrsTask.seeds = ('v1_standard',)",
    'data.DataConfig.train_count = 8', 'data.DataConfig.val_count = 4',
    'data.DataConfig.test_count = 4', 'data.DataConfig.test_size = 8',
    'train.TrainConfig.num_steps = 2', 'train.TrainConfig.eval_every = 1',
    'train.TrainConfig.batch_size = 4', 'train.TrainConfig.eval_batch_size = 4',
    'train.TrainConfig.hidden_dim = 8']


def triplet(body: str, header: str = '') -> str:
    """A get_triplet_msgs that runs `body` (indented 4), then the standard
    edge messages Dense(out_size)(edge_fts)."""
    return header + (
        'def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):\n'
        + textwrap.indent(textwrap.dedent(body).rstrip('\n') + '\n', ' ' * 4)
        + '    return nn.Dense(out_size)(edge_fts)\n')


@pytest.fixture(scope='module')
def task(tmp_path_factory):
    return task_lib.ClrsTask(
        data=data.DataConfig(algorithm='bfs', train_count=8, val_count=4,
                             test_count=4, test_size=8,
                             cache_dir=str(tmp_path_factory.mktemp('cache'))),
        train=train.TrainConfig(num_steps=2, eval_every=1, batch_size=4,
                                eval_batch_size=4, hidden_dim=8),
        max_params=100_000)


@pytest.fixture(scope='module')
def sandbox(task):
    with evaluator.Sandbox(task, limits=LIMITS) as s:
        yield s


@pytest.mark.parametrize('source, status, words', [
    ('import os\nos.system("true")\n', S.FORBIDDEN, ["'os'"]),
    (triplet('x = eval("z")\n'), S.FORBIDDEN, ['eval']),
    ('def get_triplet_msgs(z, edge_fts:\n', S.SYNTAX_ERROR, ['line 1']),
])
def test_refused_triplet_programs_never_reach_a_worker(task, source, status,
                                                       words):
    # A sandbox whose pool never starts: refusals are decided in the parent.
    with evaluator.Sandbox(task, limits=LIMITS) as s:
        result = s.evaluate([source], [0])[0]
        assert s.pool.startup_s == []
    assert result.status == status, result.message
    for word in words:
        assert word in result.message, result.message


@pytest.mark.parametrize('source, status, words', [
    ('x = 1\n', S.BUILD_ERROR, ['no `get_triplet_msgs`']),
    ('get_triplet_msgs = 3\n', S.BUILD_ERROR, ['must be a function']),
    ('def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):\n'
     '    return nn.Dense(out_size)(z)\n', S.BUILD_ERROR,
     ['edge messages of shape']),
    (triplet('raise ValueError("no thanks")\n'), S.BUILD_ERROR,
     ['ValueError', 'no thanks']),
    (triplet('pass\n', header='raise RuntimeError("at import")\n'),
     S.BUILD_ERROR, ['RuntimeError', 'at import']),
    (triplet('edge_fts = nn.Dense(100_000)(edge_fts)\n'), S.TOO_LARGE,
     ['parameters exceed the cap of 100,000']),
    (triplet('waste = np.ones((50_000, 50_000))\n', header='import numpy as np\n'),
     S.OOM, ['out of memory', '18.6 GiB']),
])
def test_hostile_triplet_programs_get_typed_statuses(sandbox, source, status,
                                                     words):
    result = sandbox.evaluate([source], [0])[0]
    assert result.status == status, result.message
    for word in words:
        assert word in result.message, result.message
    assert result.compile_s == 0.0 and result.train_s == 0.0


@pytest.mark.slow
def test_non_finite_triplet_messages_are_nan_and_the_worker_goes_on(sandbox,
                                                                    task):
    nan, seed = sandbox.evaluate(
        [triplet('edge_fts = edge_fts * jnp.inf\n'),
         task.seed_programs()[0].source], [0, 0])
    assert nan.status == S.NAN and 'non-finite' in nan.message, nan.message
    assert seed.status == S.OK, seed.message
    assert set(seed.metrics) == {'val_score', 'test_score', 'best_step',
                                 'final_train_loss'}
    assert isinstance(seed.metrics['best_step'], int)


def test_prompts_end_with_the_triplet_opening(task):
    lm = testing.tiny_language_model(batch_size=2,
                                     stop_strings=(prompts.STOP,))
    proposer = crossmut.CrossMut(lm=lm, task=task)
    assert proposer.opening == task.prompt_opening
    assert task.prompt_opening.startswith('def get_triplet_msgs(')
    for seed in task.seed_programs():
        code = prompts.prompt_code(seed.source, task.preamble)
        assert code.startswith(task.prompt_opening), seed.name


def test_search_scores_and_reports_with_the_tasks_objectives(tmp_path, task):
    def candidate(i, round_index, val, test, params):
        return store.Candidate(
            id=i, round=round_index, source=f'x = {i}\n', proposal=i,
            parents=() if round_index < 0 else (0,),
            result=base.EvalResult(S.OK, 'm', 'sha', params=params, metrics={
                'val_score': val, 'test_score': test, 'best_step': 2}))

    log = [candidate(0, -1, 0.8, 0.7, 1000), candidate(1, 0, 0.9, 0.6, 2000)]
    keys = task.objectives
    assert search.History.of(log, 0.5, keys[0]).fitness == (
        pytest.approx(-200), pytest.approx(-200))
    assert search.History.of(log, 0.5).fitness == (None, None)  # MNIST keys.
    stats = summaries.round_stats(log, 0, alpha=0.5, reference=(1.0, 7.0),
                                  objectives=keys)
    assert stats.num_scored == 1 and stats.front_size == 1
    assert stats.mean_test_error == pytest.approx(0.4)
    assert stats.hypervolume_test == pytest.approx(0.7 * 4)
    text = summaries.program_markdown(log[1], alpha=0.5, objectives=keys)
    assert '| params | val_score | test_score |' in text
    assert '| 2,000 | 0.9000 | 0.6000 | -200.0 | 2 |' in text
    assert 'val_score' in search.format_top(log[1:], keys)

    # search_config.json records the objectives; one written before they
    # were recorded is MNIST-1D's, and a report reads it so.
    workdir = str(tmp_path)
    config = search.SearchConfig(num_rounds=1)
    search._check_search_config(workdir, config, task, False)  # pylint: disable=protected-access
    with open(os.path.join(workdir, store.SEARCH_CONFIG_FILE)) as f:
        written = json.load(f)
    assert written['objectives'] == ['val_score', 'test_score']
    with store.CandidateStore.open(workdir) as s:
        for c in log:
            s.append(c)
    assert report.load_run(workdir).objectives == keys
    del written['objectives']
    written['task'] = 'mnist1d'
    with open(os.path.join(workdir, store.SEARCH_CONFIG_FILE), 'w') as f:
        json.dump(written, f)
    assert report.load_run(workdir).objectives == ('val_accuracy',
                                                  'test_accuracy')
    search._check_search_config(workdir, config, mnist1d.Mnist1dTask(),  # pylint: disable=protected-access
                                False)


def run(module, *args, cwd):
    return subprocess.run([sys.executable, '-m', module, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize('args, words', [
    (['--algorithm=bogosort'], "unknown CLRS-30 algorithm 'bogosort'"),
    (['--task=mnist1d', '--algorithm=bfs'], '--task=clrs only'),
])
def test_evaluate_bad_algorithm_fails_clearly(tmp_path, args, words):
    seed = os.path.join(os.path.dirname(__file__), os.pardir, 'seeds', 'clrs',
                        'v1_standard.py')
    out = run('evoprompting.evaluate', '--task=clrs', f'--program={seed}',
              *args, cwd=tmp_path)
    assert out.returncode != 0
    assert words in out.stderr


@pytest.mark.slow
def test_evaluate_clrs_prints_json_result(tmp_path):
    seed = os.path.join(os.path.dirname(__file__), os.pardir, 'seeds', 'clrs',
                        'v1_standard.py')
    bindings = [f'--gin_bindings={b}' for b in TINY_BINDINGS + [
        f"data.DataConfig.cache_dir = '{tmp_path}'"]]
    out = run('evoprompting.evaluate', '--task=clrs', '--algorithm=dfs',
              f'--program={seed}', '--json', *bindings, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result['status'] == 'ok', result['message']
    assert set(result['metrics']) == {'val_score', 'test_score', 'best_step'}
    assert 0.0 <= result['metrics']['test_score'] <= 1.0
    assert result['params'] > 0 and 'test (n=8)' in result['message']
    assert os.path.isdir(os.path.join(tmp_path, 'clrs'))
    assert any('dfs' in name for _, _, files in os.walk(tmp_path)
               for name in files)


@pytest.mark.slow
def test_main_runs_a_clrs_search(tmp_path):
    workdir = tmp_path / 'run'
    bindings = [f'--gin_bindings={b}' for b in TINY_BINDINGS + [
        f"data.DataConfig.cache_dir = '{tmp_path}'", 'ROUNDS = 1',
        'PROMPTS = 1', 'SAMPLES = 2', 'MAX_NEW_TOKENS = 24',
        # Two training steps: any validation score above 0 is scored.
        'search.SearchConfig.alpha = 1.0']]
    out = run('evoprompting.main', '--gin_file=gin/clrs/quick.gin',
              '--gin_file=gin/lm/tiny_random.gin', *bindings,
              f'--workdir={workdir}', cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    config = json.loads((workdir / 'search_config.json').read_text())
    assert config['task'] == 'clrs'
    assert config['objectives'] == ['val_score', 'test_score']
    log = [json.loads(l) for l in
           (workdir / 'candidates.jsonl').read_text().splitlines()]
    assert [c['round'] for c in log] == [-1, 0, 0]
    assert log[0]['result']['status'] == 'ok', log[0]['result']['message']
    assert 'val_score' in log[0]['result']['metrics']
    opening = task_lib.ClrsTask().prompt_opening
    for child in log[1:]:
        assert opening in child['source']
        assert child['parents'] == [0, 0]
    assert 'Round 0 done' in out.stderr
    report = tmp_path / 'report'
    out = run('evoprompting.report', f'--workdir={workdir}', f'--out={report}',
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert '| clrs |' in (report / 'report.md').read_text()
