"""evoprompting.styles: a program's indentation, quotes and comments."""

import ast

from evoprompting import mutation, styles

CODE = '''class Model(nn.Module):
    """Doc 'quoted'."""

    @nn.compact
    def __call__(self, x):
        # first block
        x = nn.Conv(features=8, kernel_size=(3,), padding='SAME')(x)  # conv
        x = nn.relu(x)
        s = 'it\\'s'
        return nn.Dense(10)(x.reshape((x.shape[0], -1)))
'''


def test_apply_changes_only_indentation_and_quotes():
    out = styles.apply(CODE, styles.Style(indent=2, double_quotes=True))
    assert ast.dump(ast.parse(out)) == ast.dump(ast.parse(CODE))
    assert '  @nn.compact\n  def __call__' in out and '    x = nn.relu' in out
    assert 'padding="SAME"' in out
    assert "s = 'it\\'s'" in out  # A quote inside: left alone.
    assert styles.style_of(out) == styles.Style(indent=2, double_quotes=True)
    assert styles.style_of(CODE) == styles.Style()
    assert styles.apply(CODE, styles.Style()) == CODE


def test_carry_comments_puts_parent_comments_on_kept_lines():
    source = styles.apply(CODE, styles.Style(indent=2, double_quotes=True))
    child = ast.unparse(ast.parse(CODE)).replace('nn.relu', 'nn.gelu') + '\n'
    assert '#' not in child
    out = styles.carry_comments(child, [source])
    assert ast.dump(ast.parse(out)) == ast.dump(ast.parse(child))
    lines = out.splitlines()
    conv = next(i for i, l in enumerate(lines) if 'nn.Conv' in l)
    assert lines[conv].endswith("(x)  # conv")
    assert lines[conv - 1] == '        # first block'
    assert sum('#' in l for l in lines) == 2
    assert styles.carry_comments(child, ['x = 1  # other\n']) == child


def test_mutation_operators_act_on_triplet_functions():
    import numpy as np  # pylint: disable=g-import-not-at-top
    from seeds import read_seeds  # pylint: disable=g-import-not-at-top
    triplets = dict(read_seeds('clrs'))
    rng = np.random.default_rng(0)
    a, b = triplets['v1_standard'], triplets['v9_bilinear']
    for child in (mutation.mutate(a, rng)[0], mutation.splice(a, b, rng),
                  mutation.crossover(b, a, rng)):
        tree = ast.parse(child)
        assert [n.name for n in tree.body if isinstance(n, ast.FunctionDef)][0] == (
            'get_triplet_msgs')
        assert mutation.is_model(child) and child != a
