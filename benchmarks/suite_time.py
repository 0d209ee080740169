"""The test suite's wall time on this machine: the parity subset (`python -m pytest -m parity`) and the whole
suite as CI runs it (`python -m pytest`), one after the other, with pytest's summary line and the machine.

    python benchmarks/suite_time.py --out benchmarks/results/suite_time.json --overwrite

Run it alone on the machine: a second job on the same cores slows both.
"""

import argparse
import os
import platform
import re
import subprocess
import sys
import time

from numpy_vit.io import check_new_file, write_json
from record_run import cpu_name

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
COMMANDS = ("python -m pytest -m parity", "python -m pytest")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="JSON file to write (atomically)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = ap.parse_args(argv)
    try:
        check_new_file(args.out, args.overwrite)  # before anything is measured
    except ValueError as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    import numpy
    import torch

    runs = []
    for command in COMMANDS:
        print(f"running {command} ...", file=sys.stderr, flush=True)
        argv_ = [sys.executable] + command.split()[1:] + ["-q", "-p", "no:cacheprovider"]
        start = time.perf_counter()
        res = subprocess.run(argv_, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
        summary = re.sub(r" in [\d.]+s.*$", "", res.stdout.strip().splitlines()[-1].strip("= "))
        if res.returncode != 0:
            print(res.stdout[-3000:], file=sys.stderr)
            raise SystemExit(f"suite_time: expected {command} to pass, got exit {res.returncode}: {summary}")
        runs.append(dict(command=command, summary=summary, wall_s=round(wall, 1)))
        print(f"{command}: {summary} in {wall:.1f} s", flush=True)
    machine = dict(cpu=cpu_name(), cores=os.cpu_count(), python=platform.python_version(),
                   numpy=numpy.__version__, torch=torch.__version__)
    if args.out:
        write_json(args.out, dict(machine=machine, runs=runs))


if __name__ == "__main__":
    sys.exit(main())
