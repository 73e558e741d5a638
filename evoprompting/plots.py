"""The search's plots, shared by TensorBoard (`summaries`) and the report.

Every function takes plain records (no store, no workdir) and returns a
matplotlib `Figure` drawn with the non-interactive Agg canvas; the caller
saves it (`save_png`) or turns it into pixels (`to_rgb`) and then closes it
(`plt.close(fig)`, done by both helpers here).

Axes conventions follow the paper's figures: test error against parameter
count with a logarithmic size axis (Figure 2a), maximum fitness against the
number of children generated (Figure 2b), and each round's mean size and
mean test error joined in round order (Figure 4).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import matplotlib

matplotlib.use('Agg')
from matplotlib import colors  # pylint: disable=g-import-not-at-top
from matplotlib import figure as mpl_figure  # pylint: disable=g-import-not-at-top
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
from matplotlib import ticker  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from evoprompting import selection  # pylint: disable=g-import-not-at-top

Figure = mpl_figure.Figure

_COLORS = plt.get_cmap('tab10').colors


def color(index: int) -> tuple[float, float, float]:
    """The colour of the `index`-th method, the same in every figure."""
    return _COLORS[index % len(_COLORS)]


@dataclasses.dataclass(frozen=True)
class PointGroup:
    """Models of one method (or the seeds) in the error-size plane.

    Attributes:
      label: legend entry.
      params: parameter counts.
      errors: test errors, same length as `params`.
      rounds: when given, points are coloured by round (with a colour bar)
        instead of by `color`.
      color: the group's colour (ignored when `rounds` is given).
      marker: matplotlib marker.
      front: draw the group's Pareto front as a staircase.
      names: when given, each point is labelled with its name (e.g. seeds).
    """

    label: str
    params: Sequence[float]
    errors: Sequence[float]
    rounds: Sequence[int] | None = None
    color: tuple[float, float, float] | str = 'tab:blue'
    marker: str = 'o'
    front: bool = True
    names: Sequence[str] | None = None

    def __post_init__(self):
        if len(self.params) != len(self.errors):
            raise ValueError(f'{self.label}: {len(self.params)} sizes but '
                             f'{len(self.errors)} errors')
        if self.rounds is not None and len(self.rounds) != len(self.params):
            raise ValueError(f'{self.label}: rounds do not match the points')
        if self.names is not None and len(self.names) != len(self.params):
            raise ValueError(f'{self.label}: names do not match the points')


@dataclasses.dataclass(frozen=True)
class Curve:
    """A mean with a spread band against x (fitness curves, hypervolume);
    each x is marked, so a curve of one point still shows."""

    label: str
    x: Sequence[float]
    mean: Sequence[float]
    low: Sequence[float]
    high: Sequence[float]
    color: tuple[float, float, float] | str = 'tab:blue'


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """Each round's mean size and mean test error, in round order."""

    label: str
    rounds: Sequence[int]
    mean_params: Sequence[float]
    mean_errors: Sequence[float]
    color: tuple[float, float, float] | str = 'tab:blue'


def _new_figure(size: tuple[float, float] = (7.0, 5.0)) -> tuple[Figure, object]:
    fig = plt.figure(figsize=size, layout='constrained')
    return fig, fig.add_subplot(1, 1, 1)


def error_vs_size(groups: Sequence[PointGroup], *, title: str,
                  size: tuple[float, float] = (7.0, 5.0)) -> Figure:
    """Test error against parameters (log x), one marker set per group.
    Rounds are coloured one colour per round, with whole-number ticks.
    `size` in inches: a smaller figure has relatively larger text (for an
    image that TensorBoard scales to fit a card)."""
    fig, ax = _new_figure(size)
    for group in groups:
        if not len(group.params):
            continue
        if group.rounds is not None:
            first, last = min(group.rounds), max(group.rounds)
            cmap = plt.get_cmap('viridis')
            bounds = np.arange(first - 0.5, last + 1)
            norm = (colors.BoundaryNorm(bounds, cmap.N) if len(bounds) <= cmap.N
                    else colors.Normalize(bounds[0], bounds[-1]))
            sc = ax.scatter(group.params, group.errors, c=group.rounds,
                            cmap=cmap, norm=norm, marker=group.marker, s=28,
                            alpha=0.85, label=group.label, zorder=3)
            fig.colorbar(sc, ax=ax, label='round',
                         ticks=ticker.MaxNLocator(integer=True, min_n_ticks=1))
            line_color = 'tab:red'
        else:
            star = group.marker == '*'
            ax.scatter(group.params, group.errors, color=group.color,
                       marker=group.marker, s=110 if star else 28, alpha=0.85,
                       label=group.label, zorder=4 if star else 3)
            line_color = group.color
        for name, x, y in zip(group.names or (), group.params, group.errors):
            ax.annotate(name, (x, y), textcoords='offset points',
                        xytext=(6, -3), fontsize=8)
        if group.front:
            points = list(zip(group.errors, group.params))
            front = [points[i] for i in selection.pareto_front(points)]
            errors = [e for e, _ in front]
            params = [p for _, p in front]
            ax.step(params, errors, where='post', color=line_color,
                    linewidth=1.2, alpha=0.8, zorder=2)
    ax.set_xscale('log')
    ax.set_xlabel('parameters (log scale)')
    ax.set_ylabel('test error')
    ax.set_title(title)
    ax.grid(True, which='both', alpha=0.3)
    if any(len(g.params) for g in groups):
        ax.legend(loc='best', fontsize='small')
    return fig


def curves(series: Sequence[Curve], *, title: str, xlabel: str, ylabel: str,
           reference: tuple[str, float] | None = None,
           integer_x: bool = False, zoom_from: float | None = None,
           empty_note: str = 'nothing to plot yet') -> Figure:
    """Mean lines with markers and shaded [low, high] bands on linear
    axes (a plateau reads off the tick labels); an optional labelled
    horizontal reference line (e.g. the best seed's fitness). `integer_x`:
    ticks at whole numbers only (rounds). `zoom_from`: a second panel shows
    x >= zoom_from, means only, with its y axis framed by the means there
    (and the reference), so that a plateau the full range squeezes into
    one line reads apart. `empty_note` is written on the axes when no
    series has a point."""
    if zoom_from is None:
        fig, ax = _new_figure()
        axes = [ax]
    else:
        fig = plt.figure(figsize=(11.0, 5.0), layout='constrained')
        axes = list(fig.subplots(1, 2, width_ratios=(3, 2)))
    for ax in axes:
        for s in series:
            ax.plot(s.x, s.mean, color=s.color, label=s.label, linewidth=1.6,
                    marker='o', markersize=3 if len(s.x) > 30 else 5)
            if ax is axes[0]:  # Bands would cover the zoomed panel.
                ax.fill_between(s.x, s.low, s.high, color=s.color, alpha=0.2,
                                linewidth=0)
        if reference is not None:
            ax.axhline(reference[1], color='black', linestyle='--', linewidth=1,
                       label=reference[0])
        if integer_x:
            ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(
            lambda v, _: f'{v:,.4g}' if abs(v) < 1e4 else f'{v:,.0f}'))
        ax.set_xlabel(xlabel)
        ax.grid(True, which='both', alpha=0.3)
    ax = axes[0]
    ax.set_ylabel(ylabel)
    if not any(len(s.x) for s in series):
        ax.text(0.5, 0.6, empty_note, transform=ax.transAxes, ha='center',
                va='center', color='gray', backgroundcolor='white')
    if series or reference is not None:
        ax.legend(loc='best', fontsize='small')
    if zoom_from is None:
        ax.set_title(title)
        return fig
    fig.suptitle(title)
    zoom = axes[1]
    zoom.set_title(f'{xlabel} ≥ {zoom_from:g}: means, y zoomed', fontsize='medium')
    xs = [x for s in series for x in s.x if x >= zoom_from]
    ys = [m for s in series for x, m in zip(s.x, s.mean) if x >= zoom_from]
    ys += [reference[1]] if reference is not None else []
    if xs:
        pad = 0.03 * (max(xs) - zoom_from) or 0.5
        zoom.set_xlim(zoom_from - pad, max(xs) + pad)
    if ys:
        pad = 0.08 * (max(ys) - min(ys)) or 0.05 * abs(ys[0]) or 1.0
        zoom.set_ylim(min(ys) - pad, max(ys) + pad)
    return fig


def round_trajectories(trajectories: Sequence[Trajectory], *,
                       title: str, empty_note: str = 'nothing to plot yet'
                       ) -> Figure:
    """Figure 4: each round's (mean params, mean test error), joined in
    round order and labelled with the round number. Trajectories without
    a point are left out of the legend; `empty_note` is written on the axes
    when none has one."""
    fig, ax = _new_figure()
    trajectories = [t for t in trajectories if len(t.rounds)]
    if not trajectories:
        ax.text(0.5, 0.6, empty_note, transform=ax.transAxes, ha='center',
                va='center', color='gray', backgroundcolor='white')
    for t in trajectories:
        ax.plot(t.mean_params, t.mean_errors, color=t.color, marker='o',
                markersize=5, linewidth=1.2, label=t.label)
        for r, x, y in zip(t.rounds, t.mean_params, t.mean_errors):
            ax.annotate('seeds' if r < 0 else str(r), (x, y),
                        textcoords='offset points', xytext=(4, 4),
                        fontsize=8, color=t.color)
    ax.set_xscale('log')
    ax.set_xlabel('mean parameters of the round (log scale)')
    ax.set_ylabel('mean test error of the round')
    ax.set_title(title)
    ax.grid(True, which='both', alpha=0.3)
    if trajectories:
        ax.legend(loc='best', fontsize='small')
    return fig


def stacked_bars(labels: Sequence[str], fractions: Sequence[Sequence[float]],
                 keys: Sequence[str], *, title: str) -> Figure:
    """One horizontal bar per label, split by `keys` (fractions sum to 1)."""
    fig, ax = _new_figure((9.0, max(2.5, 0.5 * len(labels) + 1.5)))
    values = np.asarray(fractions, dtype=float).reshape(len(labels), len(keys))
    left = np.zeros(len(labels))
    cmap = plt.get_cmap('tab20')
    for j, key in enumerate(keys):
        if not values[:, j].any():
            continue
        ax.barh(range(len(labels)), values[:, j], left=left, label=key,
                color=cmap(j % cmap.N))
        left += values[:, j]
    ax.set_yticks(range(len(labels)), labels, fontsize='small')
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel('fraction of sampled children')
    ax.set_title(title)
    fig.legend(loc='outside right center', fontsize='small')
    return fig


def save_png(fig: Figure, path: str, *, dpi: int = 120) -> None:
    """Writes `fig` as a PNG file and closes it."""
    fig.savefig(path, format='png', dpi=dpi)
    plt.close(fig)


def to_rgb(fig: Figure, *, dpi: int = 100) -> np.ndarray:
    """The figure's pixels as a [height, width, 3] uint8 array; closes it."""
    fig.set_dpi(dpi)
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return pixels
