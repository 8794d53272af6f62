"""Run a recipe: several stages in order into one recipe directory, then its report card.

    chatforge run recipes/demo.yaml                 # everything that is not finished yet
    chatforge run recipes/demo.yaml --dry-run       # the plan: what runs, what is skipped, and why
    chatforge run recipes/demo.yaml --from dpo      # rerun dpo and every stage after it
    chatforge run recipes/demo.yaml --only card     # rerun one stage (earlier ones must be finished)
    chatforge run recipes/smoke.yaml --out /tmp/smoke
    chatforge run recipes/demo.yaml --report-only   # the report card of what has run so far

A finished stage whose resolved config, input files and input stages are unchanged is skipped; an
interrupted one (Ctrl-C, SIGKILL) resumes from its checkpoints. Every stage's config is validated,
and every `${stage.key}` reference resolved, before anything runs. The recipe format: docs/recipes.md.
"""

from __future__ import annotations

import argparse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chatforge run", description=__doc__.split("\n\n")[0])
    p.add_argument("recipe", help="the recipe YAML (see recipes/ and docs/recipes.md)")
    p.add_argument("--out", help="the recipe directory (default: the recipe's `out`, else runs/<name>)")
    p.add_argument("--from", dest="first", metavar="STAGE", help="rerun STAGE and every stage after it")
    p.add_argument("--only", metavar="STAGE", help="rerun only STAGE (the stages it reads must be finished)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    p.add_argument("--no-report", action="store_true", help="do not write report.html / report.md")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: write report.html / report.md from what the recipe directory holds now")
    return p


def main(argv: list[str]) -> int:
    from chatforge.errors import ConfigError
    from chatforge.recipes.runner import run_recipe

    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has printed: an exit code, not an exception
        return int(exc.code or 0)
    if args.first and args.only:
        raise ConfigError("give --from or --only, not both")
    if args.report_only:
        from chatforge.recipes.runner import report_only

        report_only(args.recipe, out=args.out)
        return 0
    run_recipe(args.recipe, out=args.out, first=args.first, only=args.only, dry_run=args.dry_run, report=not args.no_report)
    return 0
