"""The paper's tables, in Markdown and LaTeX (booktabs), each with a note stating N and the interval method.

* ``table_certified``: every run, certified accuracy at the reported radii with 95 % Clopper-Pearson
  intervals, clean accuracy and ACR +- standard error;
* ``table1``: the FaRS variants (``fars-closed``, ``fars-crown``, ``fars-mc`` per head and sigma) at eps = 0.05, 0.1,
  0.2, 0.3 with their clean accuracy;
* ``table2``: l2-PGD (empirical) accuracy of each model at the same eps, from ``robustness.csv``
  (skipped, with a note, when the run has no attack results).

Numbers come from :mod:`bench.report.paper_metrics`; this module only formats and writes.
The LaTeX needs only ``\\usepackage{booktabs}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..common.methods import FARS_METHODS
from ..common.units import fmt_radius
from .paper_metrics import CONFIDENCE, TABLE_EPS, mc_cutoff, pgd_accuracy, run_table
from .tables import fmt_sigma, markdown_table

_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "#": r"\#", "_": r"\_", "$": r"\$",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


# ---------------------------------------------------------------------------
# Cells
# ---------------------------------------------------------------------------


def fmt_interval(a: float, lo: float, hi: float, latex: bool = False) -> str:
    """``'81.0 [72.0, 88.1]'`` (percent, one decimal); ``'—'`` (LaTeX ``--``) when missing."""
    if a is None or pd.isna(a):
        return "--" if latex else "—"
    main = f"{100 * a:.1f}"
    if pd.isna(lo) or pd.isna(hi):
        return main
    ci = f"[{100 * lo:.1f}, {100 * hi:.1f}]"
    return f"{main}\\,{{\\scriptsize {ci}}}" if latex else f"{main} {ci}"


def fmt_acr_se(acr: float, se: float, latex: bool = False) -> str:
    """``'0.212 ± 0.014'`` (``$\\pm$`` in LaTeX); ``'∞'`` for an infinite ACR."""
    if acr is None or pd.isna(acr):
        return "--" if latex else "—"
    if math.isinf(acr):
        return r"$\infty$" if latex else "∞"
    pm = r" $\pm$ " if latex else " ± "
    return f"{acr:.3f}" + ("" if pd.isna(se) else f"{pm}{se:.3f}")


def latex_escape(text: object) -> str:
    """Escape LaTeX's special characters in a plain-text cell."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


# ---------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------


def latex_table(columns: Sequence[str], rows: Sequence[Sequence[str]], note: str, n_left: int = 3) -> str:
    """A booktabs ``tabular`` (``\\toprule``, ``\\midrule``, ``\\bottomrule``) followed by a ``\\footnotesize`` note.

    Cells are written as given (already LaTeX), the ``note`` (plain text) is escaped; the first
    ``n_left`` columns are left-aligned, the rest right-aligned.  Ends with a newline.
    """
    spec = "l" * n_left + "r" * (len(columns) - n_left)
    lines = [f"\\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(columns) + r" \\", r"\midrule"]
    lines += [" & ".join(r) + r" \\" for r in rows]
    note_tex = latex_escape(note).replace("†", _DAGGER[True])
    lines += [r"\bottomrule", r"\end{tabular}", "", r"\smallskip", r"{\footnotesize " + note_tex + "}", ""]
    return "\n".join(lines)


def _note(n_images: Sequence[int], extra: str = "") -> str:
    """The note under a table: the number of images and the interval method."""
    ns = sorted({int(n) for n in n_images})
    n_text = f"N = {ns[0]}" if len(ns) == 1 else "N = " + ", ".join(str(n) for n in ns) + " (per run)"
    return (f"{n_text} images per run. Brackets: {100 * CONFIDENCE:.0f}% Clopper-Pearson (exact binomial) "
            "interval over the images (statsmodels proportion_confint, method='beta'). " + extra).strip()


def _write(stem: Path, markdown: str, latex: str) -> dict[str, Path]:
    """Write ``stem.md`` and ``stem.tex``; returns ``{'<name>_md': ..., '<name>_tex': ...}``."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    md, tex = stem.with_suffix(".md"), stem.with_suffix(".tex")
    md.write_text(markdown, encoding="utf-8")
    tex.write_text(latex, encoding="utf-8")
    return {f"{stem.name}_md": md, f"{stem.name}_tex": tex}


_DAGGER = {False: "†", True: r"$^\dagger$"}


def _beyond_cutoff(row: pd.Series, r: float, mc: tuple[int, float] | None) -> bool:
    """Whether radius ``r`` lies beyond the run's Monte Carlo cut-off (its certified accuracy is 0 by construction)."""
    return mc is not None and not pd.isna(row["sigma"]) and r > mc_cutoff(row["sigma"], *mc)


def _acc_cells(row: pd.Series, radii: Sequence[float], latex: bool, mc: tuple[int, float] | None) -> list[str]:
    """``acc [lo, hi]`` cells of a :func:`run_table` row at ``radii``; a dagger past the Monte Carlo cut-off."""
    return [fmt_interval(row[f"acc@{r:g}"], row[f"lo@{r:g}"], row[f"hi@{r:g}"], latex)
            + (_DAGGER[latex] if _beyond_cutoff(row, r, mc) else "") for r in radii]


def _cutoff_note(t: pd.DataFrame, radii: Sequence[float], mc: tuple[int, float] | None) -> str:
    """The dagger's explanation, when some cell is past its run's Monte Carlo cut-off."""
    if mc is None or not any(_beyond_cutoff(row, r, mc) for _, row in t.iterrows() for r in radii):
        return ""
    return (f" †: radius beyond the Monte Carlo cut-off sigma * Phi^-1(alpha^(1/n)) (n = {mc[0]}, "
            f"alpha = {mc[1]:g}): no image can be certified there with these settings.")


def _run_cells(row: pd.Series, latex: bool) -> list[str]:
    esc = latex_escape if latex else str
    sigma = fmt_sigma(row["sigma"])
    return [esc(row["method"]), esc(row["model"]), ("--" if latex and sigma == "—" else sigma)]


def write_table_certified(df: pd.DataFrame, out_dir: str | Path, radii: Sequence[float],
                          mc: tuple[int, float] | None = None) -> dict[str, Path]:
    """``table_certified.md/.tex``: every run at ``radii`` (radius 0 is the clean-accuracy column) and ACR +- SE.

    ``mc = (n, alpha)`` of CERTIFY marks (†) the cells beyond a run's Monte Carlo cut-off.
    """
    radii = [float(r) for r in radii if float(r) > 0]
    t = run_table(df, radii)
    md_cols = ["method", "model", "σ", "clean", *[f"ε={fmt_radius(r)}" for r in radii], "ACR ± SE"]
    tex_cols = ["method", "model", r"$\sigma$", "clean", *[f"$\\varepsilon={fmt_radius(r)}$" for r in radii], "ACR"]
    md_rows: list[list[str]] = []
    tex_rows: list[list[str]] = []
    for _, row in t.iterrows():
        for latex, rows in ((False, md_rows), (True, tex_rows)):
            cells = _run_cells(row, latex) + [fmt_interval(row["clean_acc"], row["clean_lo"], row["clean_hi"], latex)]
            cells += _acc_cells(row, radii, latex, mc)
            rows.append([*cells, fmt_acr_se(row["acr"], row["acr_se"], latex)])
    note = _note(t["examples"] if len(t) else [0], "Certified accuracy (%) at l2 radius eps ([0, 1] pixel scale; "
                 "abstentions count as wrong); clean = certified at radius 0. ACR: average certified radius "
                 "mean(radius * correct) +- its standard error std/sqrt(N)." + _cutoff_note(t, radii, mc))
    md = "# Certified accuracy with 95% intervals\n\n" + markdown_table(md_cols, md_rows, md_cols[2:], pad=True)
    return _write(Path(out_dir) / "table_certified", md + "\n\n" + note + "\n", latex_table(tex_cols, tex_rows, note))


def write_table1(df: pd.DataFrame, out_dir: str | Path, eps: Sequence[float] = TABLE_EPS,
                 mc: tuple[int, float] | None = None) -> dict[str, Path]:
    """``table1.md/.tex``: certified accuracy of each FaRS variant at ``eps`` with its clean accuracy.

    Clean accuracy = fraction with ``predict == label``; for ``fars-mc`` abstentions count as wrong, for
    ``fars-closed`` and ``fars-crown`` it is the accuracy of the certified (deterministic) prediction -- in
    both cases the certified accuracy at radius 0.  Without FaRS runs nothing is written (returns ``{}``).
    ``mc = (n, alpha)`` marks (†) the cells beyond a run's Monte Carlo cut-off.
    """
    fars = df[df["method"].isin(FARS_METHODS)]
    if fars.empty:
        return {}
    t = run_table(fars, eps)
    md_cols = ["method", "head", "σ", "clean", *[f"ε={fmt_radius(e)}" for e in eps]]
    tex_cols = ["variant", "head", r"$\sigma$", "clean", *[f"$\\varepsilon={fmt_radius(e)}$" for e in eps]]
    md_rows: list[list[str]] = []
    tex_rows: list[list[str]] = []
    for _, row in t.iterrows():
        for latex, rows in ((False, md_rows), (True, tex_rows)):
            cells = _run_cells(row, latex) + [fmt_interval(row["clean_acc"], row["clean_lo"], row["clean_hi"], latex)]
            rows.append(cells + _acc_cells(row, eps, latex, mc))
    note = _note(t["examples"], "Certified accuracy (%) of the FaRS variants at l2 radius eps. Clean: "
                 "predict == label (for fars-mc abstentions count as wrong), i.e. certified at radius 0."
                 + _cutoff_note(t, eps, mc))
    md = "# Table 1: FaRS certified accuracy\n\n" + markdown_table(md_cols, md_rows, md_cols[2:], pad=True)
    return _write(Path(out_dir) / "table1", md + "\n\n" + note + "\n", latex_table(tex_cols, tex_rows, note))


def write_table2(robustness: pd.DataFrame | None, out_dir: str | Path,
                 eps: Sequence[float] = TABLE_EPS) -> dict[str, Path]:
    """``table2.md/.tex``: l2-PGD accuracy of each model at ``eps`` (from ``robustness.csv``).

    Without attack results the files hold a one-line note saying the table was skipped.
    """
    if robustness is None or robustness.empty:
        note = ("Table 2 skipped: no attack results (robustness.csv from the attack stage, "
                "`python -m bench.attack --results DIR`) in this run.")
        return _write(Path(out_dir) / "table2", note + "\n", f"% {note}\n")
    t = pgd_accuracy(robustness, eps)
    md_cols = ["model", "clean", *[f"ε={fmt_radius(e)}" for e in eps]]
    tex_cols = ["model", "clean", *[f"$\\varepsilon={fmt_radius(e)}$" for e in eps]]
    md_rows: list[list[str]] = []
    tex_rows: list[list[str]] = []
    for _, row in t.iterrows():
        for latex, rows in ((False, md_rows), (True, tex_rows)):
            clean = fmt_interval(row["clean"], row["clean_lo"], row["clean_hi"], latex)
            cells = [latex_escape(row["model"]) if latex else str(row["model"]), clean]
            rows.append(cells + [fmt_interval(row[f"acc@{e:g}"], row[f"lo@{e:g}"], row[f"hi@{e:g}"], latex)
                                 for e in eps])
    note = _note(t["examples"], "Empirical robust accuracy (%) under the attack stage's l2-PGD at radius eps "
                 "(an upper bound on the true robust accuracy of the base classifier).")
    md = "# Table 2: l2-PGD accuracy\n\n" + markdown_table(md_cols, md_rows, md_cols[1:], pad=True)
    return _write(Path(out_dir) / "table2", md + "\n\n" + note + "\n", latex_table(tex_cols, tex_rows, note, n_left=1))
