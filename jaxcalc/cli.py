"""The ``jaxcalc`` command: ``jaxcalc list``, ``jaxcalc run NAME [--out DIR] [--quick] [--set k=v]``
and ``jaxcalc check`` (the derivative audit; exit status 1 when any derivative is off)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from jaxcalc import runner


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxcalc",
        description="jaxcalc: the calculus of neural networks in JAX — run research experiments.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiments with a one-line description each")
    run = sub.add_parser("run", help="run an experiment; writes config.json, results.json and plots")
    run.add_argument("name", help="experiment name (see `jaxcalc list`)")
    runner.add_run_arguments(run)
    check = sub.add_parser("check", help="audit every primitive's derivative (closed form vs "
                           "autodiff vs finite differences); exit 1 if any exceeds its tolerance "
                           "(= `jaxcalc run derivative_audit`)")
    runner.add_run_arguments(check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "list":
        rows = runner.describe_experiments()
        width = max(len(name) for name, _ in rows)
        for name, description in rows:
            print(f"{name:<{width}}  {description}")
        return 0
    if args.command == "check":
        return runner.run_and_report("derivative_audit", args)
    return runner.run_and_report(args.name, args)


if __name__ == "__main__":
    sys.exit(main())
