"""The evolution report: score over iterations, the lineage of the best, the edits that mattered,
and under multi-fidelity selection the rungs, the finals and how well each rung predicted the next.

Written as Markdown (for the terminal and reviews) and as a self-contained HTML page with the
score plot embedded, beside the best candidate exported as a standalone directory.
"""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from offline_agent.feedback_checks import MIN_MOVE, overall, precision_by
from offline_agent.probe_review import review_probes
from offline_agent.program_db import Program, ProgramDatabase, RungResult
from recsys.candidate import Candidate
from recsys.reports import figure_png, write_report_files

SEVERITY_SHOWN = 0.25  # probe signals below this are healthy and left out of the chain


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def export_best(db: ProgramDatabase, directory: Path) -> Program | None:
    """Write the run's result (:meth:`ProgramDatabase.result`) to ``directory``; None when nothing was evaluated."""
    best = db.result()
    if best is not None:
        description = f"Evolved: {best.feedback.rationale[:200]}"
        Candidate(f"evolved-{best.content_hash[:12]}", description, best.blocks, {}).write(directory)
    return best


def score_plot(db: ProgramDatabase, fitness: str) -> str:
    """Base64 PNG: each evaluated candidate's fitness by iteration, and the best so far."""
    evaluated = sorted(db.programs(status="evaluated"), key=lambda p: p.iteration)
    figure, axis = plt.subplots(figsize=(7, 3.5), dpi=110)
    if evaluated:
        scores = [p.fitness or 0.0 for p in evaluated]
        axis.scatter([p.iteration for p in evaluated], scores, s=14, alpha=0.6, label="candidate")
        best, steps = float("-inf"), []
        for program in evaluated:
            best = max(best, program.fitness or float("-inf"))
            steps.append(best)
        axis.step([p.iteration for p in evaluated], steps, where="post", color="C3", label="best so far")
        axis.legend(loc="lower right")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("iteration")
    axis.set_ylabel(f"validation {fitness}")
    axis.grid(alpha=0.3)
    return figure_png(figure)


def report_markdown(db: ProgramDatabase, fitness: str, stopped: str) -> str:
    programs = db.programs()
    best = db.result()
    top = db.best_at_top_rung()
    counts = db.counts()
    spend = db.get_state("spend", {})
    lines = [
        "# Evolution report",
        "",
        f"- iterations: {db.get_state('iteration', 0)}; stopped by: {stopped}",
        f"- candidates: {counts.get('evaluated', 0)} evaluated, {counts.get('failed', 0)} failed, "
        f"{counts.get('pending', 0)} pending",
        f"- LLM spend: ${spend.get('usd', 0.0):.4f}, {spend.get('tokens', 0)} tokens",
        "",
    ]
    if best is not None:
        test = top[1].test_metrics if top else best.feedback.test_metrics or {}
        fidelity = f" at rung {top[1].rung} ({top[1].trained_epochs} epochs)" if top else ""
        lines += [
            "## Best candidate",
            "",
            f"`{best.key[:16]}` (island {best.island}, generation {best.generation}): validation {fitness}"
            f"{fidelity} **{_fmt(top[1].fitness if top else best.fitness)}**; test {fitness} "
            f"{_fmt(test.get(fitness))} (reported, never used to select)",
            "",
            *rung_section(db, fitness),
            "## Lineage of the best (newest first)",
            "",
            f"| candidate | origin | validation {fitness} | change |",
            "|---|---|---|---|",
        ]
        for program in db.lineage(best.key):
            rationale = program.feedback.headline(140) or program.origin
            lines.append(f"| `{program.key[:12]}` | {program.origin} | {_fmt(program.fitness)} | {rationale} |")
        lines += feedback_chain(db, best, fitness)
    lines += probe_section(programs) + feedback_check_section(programs)
    mattered = []
    for child in programs:
        if child.origin == "proposed" and child.status == "evaluated" and child.parent_key:
            parent = db.get(child.parent_key)
            delta = (child.fitness or 0) - (parent.fitness or 0)
            mattered.append((delta, child))
    if mattered:
        lines += ["", "## Edits that mattered", "", f"| Δ {fitness} | rule / proposer | change |", "|---|---|---|"]
        for delta, child in sorted(mattered, key=lambda pair: -abs(pair[0]))[:10]:
            source = child.feedback.rule or child.feedback.proposer or ""
            lines.append(f"| {delta:+.4f} | {source} | {child.feedback.headline(140)} |")
    failed = [p for p in programs if p.status == "failed"]
    if failed:
        kinds = Counter(str(p.reason).split(":")[0] for p in failed)
        lines += ["", "## Failures", ""] + [f"- {count} × {reason}" for reason, count in kinds.most_common()]
        lines += [""] + [f"- `{p.key[:12]}` ({p.feedback.stage or '?'}): {str(p.reason)[:300]}" for p in failed]
    rejections = db.get_state("rejections", [])
    if rejections:
        lines += ["", f"## Rejected proposals ({len(rejections)})", ""] + [f"- {reason}" for reason in rejections]
    return "\n".join(lines) + "\n"


def probe_section(programs: list[Program]) -> list[str]:
    """The probes the loop added: each verification, then the run's verdict (kept, dropped, on trial) and why."""
    checks = [check for program in programs for check in program.feedback.probe_checks]
    verdicts = review_probes(programs)
    if not checks and not verdicts:
        return []
    lines = ["", "## Probes proposed by the agent", ""] + [f"- {check}" for check in checks]
    if verdicts:
        lines += ["", "| probe | measures | added by | verdict | candidates | why |", "|---|---|---|---|---|---|"]
        lines += [f"| {v.probe} | {v.measures} | `{v.added_by}` | {v.status} | {v.candidates} | {v.reason} |"
                  for v in verdicts]  # fmt: skip
    return lines


def feedback_check_section(programs: list[Program]) -> list[str]:
    """Feedback precision: of the edits that answered a flagged problem, the share that fixed it, per rule/proposer."""
    groups = precision_by(programs)
    if not groups:
        return []
    total = overall(programs)
    lines = [
        "", "## Feedback checks", "",
        f"Of {total.targeted} flagged problems an edit answered, {total.checked} were measured in the child and "
        f"{total.fixed} fixed (the signal fell by at least {MIN_MOVE}): feedback precision {_fmt(total.precision)}.",
        "", "| rule / proposer | targeted | checked | fixed | precision |", "|---|---|---|---|---|",
    ]  # fmt: skip
    for name, found in sorted(groups.items(), key=lambda kv: -kv[1].targeted):
        lines.append(f"| {name} | {found.targeted} | {found.checked} | {found.fixed} | {_fmt(found.precision)} |")
    return lines


def rung_section(db: ProgramDatabase, fitness: str) -> list[str]:
    """The rungs of multi-fidelity selection and the Kendall τ between successive rungs; none without rungs."""
    results = db.rung_results()
    if not results:
        return []
    lines = [
        "## Multi-fidelity selection",
        "",
        "A candidate goes on to the next rung (its training resumed from its checkpoint) when it ranks in the top "
        "fraction of the candidates evaluated at its rung so far, once at least 1 / fraction were; the fraction "
        "doubles (at most 1) where τ, over at least the configured number of pairs, is below the threshold. "
        "The last rung is the finals, trained to convergence.",
        "",
        f"| rung | epochs | evaluated | failed | pending | best validation {fitness} | CPU-seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for rung in sorted({r.rung for r in results}):
        at = [r for r in results if r.rung == rung]
        done = [r.fitness for r in at if r.fitness is not None]
        counts = Counter(r.status for r in at)
        lines.append(
            f"| {rung} | {at[0].epochs} | {counts['evaluated']} | {counts['failed']} | {counts['pending']} | "
            f"{_fmt(max(done, default=None))} | {sum(r.cpu_seconds for r in at):.0f} |"
        )
    lines += ["", "| rungs | Kendall τ | pairs | fraction promoted |", "|---|---|---|---|"]
    for f in db.get_state("proxy_fidelity", []):
        lines.append(f"| {f['lower']} → {f['lower'] + 1} | {_fmt(f['tau'])} | {f['pairs']} | {f['fraction']:.2f} |")
    top = max(r.rung for r in results)
    if top > 0:
        lines += ["", f"| candidate at rung {top} | trained epochs | stopped | validation {fitness} | test {fitness} |",
                  "|---|---|---|---|---|"]  # fmt: skip
        at_top = sorted((r for r in results if r.rung == top), key=lambda r: -(r.fitness or -1.0))
        lines += [_final_row(r, fitness) for r in at_top]
    return [*lines, ""]


def _final_row(result: RungResult, fitness: str) -> str:
    return (
        f"| `{result.content_hash[:12]}` | {result.trained_epochs or '—'} | {result.stopped or result.reason or '—'} | "
        f"{_fmt(result.fitness)} | {_fmt(result.test_metrics.get(fitness))} |"
    )


def _evidence(program: Program) -> str:
    """The feedback a proposer saw on ``program``: the strongest probe signals and complaints."""
    signals = sorted(program.feedback.signals.items(), key=lambda kv: -kv[1])
    complaints = sorted(program.feedback.complaints.items(), key=lambda kv: -kv[1])
    parts = [f"{name} {value:.2f}" for name, value in signals[:3] if value >= SEVERITY_SHOWN]
    parts += [f"{share:.0%} of personas: {name}" for name, share in complaints[:2] if share > 0]
    critiques = program.feedback.critiques
    status = critiques.assessment.status if critiques else None
    return "; ".join(([f"simulator {status}"] if status else []) + parts) or "—"


def feedback_chain(db: ProgramDatabase, best: Program, fitness: str) -> list[str]:
    """Each step of the best's lineage: what the feedback said about the parent, the edit it led to, the result."""
    lineage = list(db.lineage(best.key))[::-1]
    if len(lineage) < 2:
        return []
    lines = ["", "## Feedback chain of the best (oldest first)", "",
             f"| parent feedback | edit | Δ validation {fitness} |", "|---|---|---|"]  # fmt: skip
    for parent, child in itertools.pairwise(lineage):
        edit = child.feedback.rule or child.feedback.headline(80)
        delta = (child.fitness or 0.0) - (parent.fitness or 0.0)
        lines.append(f"| {_evidence(parent)} | {edit} | {delta:+.4f} |")
    return lines


def write_report(db: ProgramDatabase, run_dir: Path, fitness: str, stopped: str) -> tuple[Path, Path]:
    """``report.md`` and ``report.html`` in the run folder."""
    plots = [(f"validation {fitness} by iteration", score_plot(db, fitness))]
    paths = write_report_files(run_dir / "report", "Evolution report", report_markdown(db, fitness, stopped), plots)
    return paths["md"], paths["html"]
