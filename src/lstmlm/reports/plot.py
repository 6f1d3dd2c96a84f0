"""Draw the training curves of runs (storage.curves reads them) into an image.

`plot_runs` needs matplotlib and uses its Agg backend, so it works without a display.
Runs drawn together share one axis: perplexity per token for runs of one level, bits
per character of the raw text for any levels (`curves.choose_metric`).
"""

from __future__ import annotations

from pathlib import Path

from lstmlm.storage.curves import Curves, choose_metric, read_curves, value


def plot_runs(
    runs: list[str | Path],
    out: str | Path,
    metric: str = "auto",
    title: str | None = None,
    dpi: int = 110,
) -> Path:
    """Draw train (line) and valid (markers) curves of `runs` against epochs and minutes.

    ValueError when a run has no training records yet, for ppl across levels, or for bpc
    of a run that did not record it (an older word-level run; see `choose_metric`).
    """
    if not runs:
        raise ValueError("give at least one run folder")
    curves = [read_curves(r) for r in runs]
    metric = check_curves(curves, metric, [str(r) for r in runs])
    return _draw(curves, out, metric, title, dpi)


def plot_curves(
    curves: list[Curves],
    out: str | Path,
    metric: str = "auto",
    title: str | None = None,
    dpi: int = 110,
) -> Path:
    """`plot_runs` on curves already read (and perhaps renamed or extended by the caller)."""
    if not curves:
        raise ValueError("give at least one curve")
    return _draw(curves, out, check_curves(curves, metric), title, dpi)


def check_curves(curves: list[Curves], metric: str, names: list[str] | None = None) -> str:
    """The metric to draw `curves` in (see `choose_metric`); ValueError for a curve with
    no points. `names` (default: the curves' own) name the runs in the messages."""
    names = names or [c.name for c in curves]
    for c, name in zip(curves, names, strict=True):
        if not c.train and not c.valid:
            raise ValueError(f"{name} has no training records yet")
    levels = [c.level for c in curves]
    return choose_metric(levels, metric, names, [c.has_bpc for c in curves])


def _draw(curves: list[Curves], out: str | Path, metric: str, title: str | None, dpi: int) -> Path:
    """The figure of `curves` in `metric` ("ppl" or "bpc"), written to `out`."""
    try:
        import matplotlib
    except ImportError:
        raise ValueError("plotting needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig = Figure(figsize=(10, 4), dpi=dpi, layout="constrained")
    ax_epoch, ax_min = fig.subplots(1, 2, sharey=True)
    ylabel = "bits per character" if metric == "bpc" else "perplexity"
    for i, c in enumerate(curves):
        color = f"C{i % 10}"
        for ax, x in ((ax_epoch, "epoch"), (ax_min, "minutes")):
            if c.train:
                ax.plot(
                    [getattr(p, x) for p in c.train],
                    [value(p, metric) for p in c.train],
                    color=color,
                    alpha=0.45,
                    linewidth=1,
                    label=f"{c.name} train",
                )
            if c.valid:
                ax.plot(
                    [getattr(p, x) for p in c.valid],
                    [value(p, metric) for p in c.valid],
                    color=color,
                    marker="o",
                    markersize=4,
                    linewidth=1.8,
                    label=f"{c.name} valid",
                )
    for ax, xlabel in ((ax_epoch, "epoch"), (ax_min, "training minutes")):
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3, which="both")
        if metric == "ppl":
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
    ax_epoch.set_ylabel(ylabel)
    ax_min.legend(fontsize=8, loc="upper right")  # every curve has points (check_curves)
    fig.suptitle(title or f"{ylabel}: " + ", ".join(c.name for c in curves))
    out = image_path(out)
    try:
        fig.savefig(out)
    except OSError as e:
        raise ValueError(f"{out}: cannot write the figure ({e.strerror or e})") from None
    return out


def image_path(out: str | Path) -> Path:
    """The file a figure asked for as `out` is written to: FOLDER/curves.png for a folder,
    NAME.png for a name without an extension; ValueError for a format matplotlib lacks."""
    path = Path(out)
    if path.is_dir():
        path = path / "curves.png"
    if not path.suffix:
        return path.with_name(path.name + ".png")
    from matplotlib.figure import Figure

    formats = Figure().canvas.get_supported_filetypes()
    if path.suffix[1:].lower() not in formats:
        raise ValueError(
            f"{out}: cannot write a {path.suffix} image; use one of "
            + ", ".join("." + f for f in sorted(formats))
        )
    return path
