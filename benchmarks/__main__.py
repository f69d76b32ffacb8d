"""``python -m benchmarks run [--quick] [--out benchmarks/RESULTS.md]`` and ``python -m benchmarks venvs``.

``run`` executes the whole suite (see ``benchmarks/README.md``) and writes the Markdown
table to ``--out`` and the raw figures to the same path with ``.json``. Exit status: 0 when
the report is written (even if a contender crashed: that is in the report), 2 on usage
errors, 1 if the suite itself failed before writing anything.
``venvs`` builds the peer virtual environments under ``benchmarks/.venvs/`` ahead of time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmarks import report, suite, venvs
from benchmarks.contenders import BENCH_DIR, CONTENDERS


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the suite and write the report")
    run.add_argument("--quick", action="store_true", help="tiny durations and counts (< 3 min), for the test")
    run.add_argument("--out", type=Path, default=BENCH_DIR / "RESULTS.md", help="Markdown report (JSON next to it)")
    run.add_argument("--workdir", type=Path, default=None, help="scratch directory (default benchmarks/out/run-<time>)")
    run.add_argument("--only", default="", help=f"comma-separated contenders, from: {', '.join(c.key for c in CONTENDERS)}")
    run.add_argument("--no-build-venvs", action="store_true", help="skip peers whose venv is missing instead of building it")
    sub.add_parser("venvs", help="build benchmarks/.venvs/{naive,kserve,mlserver}")
    args = parser.parse_args(argv)

    if args.command == "venvs":
        for name in venvs.SPECS:
            print(name, venvs.ensure(name, BENCH_DIR / "out" / "venvs.log"))
        return 0
    workdir = args.workdir or BENCH_DIR / "out" / time.strftime("run-%Y%m%d-%H%M%S")
    only = [k.strip() for k in args.only.split(",") if k.strip()] or None
    unknown = set(only or ()) - {c.key for c in CONTENDERS}
    if unknown:
        parser.error(f"unknown contenders: {', '.join(sorted(unknown))}")
    options = suite.Options(quick=args.quick, out=args.out, workdir=workdir, only=only,
                            build_venvs=not args.no_build_venvs, command=suite.default_command(argv))
    results = suite.run(options)
    json_path = report.write(results, args.out)
    print(f"wrote {args.out} and {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
