"""Start-up time of the command line and the package: what every shell-pipeline step pays before work.

Times, in fresh processes, ``python -c "import tod_clean"`` and ``python -m tod_clean --help`` (the console
script's code path), ``--repeats`` times each, alternating, and reports the medians. ``--other PATH`` adds a
second checkout (its ``tod_clean`` imported through ``PYTHONPATH``), measured interleaved with this one.

    python bench/startup.py --repeats 7
    python bench/startup.py --repeats 7 --other /tmp/old-checkout --name startup_vs_old
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, save_json  # noqa: E402

COMMANDS = {
    "import tod_clean": ["-c", "import tod_clean"],
    "tod-clean --help": ["-m", "tod_clean", "--help"],
}


def timed(args: list[str], checkout: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, check=True, capture_output=True, cwd=checkout)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--other", type=Path, help="another checkout to time side by side")
    parser.add_argument("--name", default="startup")
    args = parser.parse_args()
    checkouts = {"this": ROOT} | ({"other": args.other.resolve()} if args.other else {})
    times: dict[str, dict[str, list[float]]] = {name: {cmd: [] for cmd in COMMANDS} for name in checkouts}
    for path in checkouts.values():  # warm the file cache once
        timed(COMMANDS["import tod_clean"], path)
    for _ in range(args.repeats):
        for cmd, cmd_args in COMMANDS.items():
            for name, path in checkouts.items():
                times[name][cmd].append(timed(cmd_args, path))
    medians = {
        name: {cmd: statistics.median(values) for cmd, values in per.items()} for name, per in times.items()
    }
    lines = [
        "| checkout | " + " | ".join(f"{cmd} s (median)" for cmd in COMMANDS) + " |",
        "|---" * (len(COMMANDS) + 1) + "|",
    ]
    for name, path in checkouts.items():
        lines.append(
            f"| {name} ({path}) | " + " | ".join(f"{medians[name][cmd]:.2f}" for cmd in COMMANDS) + " |"
        )
    save_json(
        args.name,
        {
            "machine": machine(),
            "command": " ".join(sys.argv),
            "times": times,
            "medians": medians,
            "checkouts": {name: str(path) for name, path in checkouts.items()},
            "load_average": os.getloadavg(),
        },
    )
    (Path(__file__).resolve().parent / "results" / f"{args.name}.md").write_text(
        "\n".join(lines) + "\n", encoding="utf-8"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
