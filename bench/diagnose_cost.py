"""Wall time of ``pyro-vae diagnose`` end to end on a user's CSV of 5 000 2-D points.

Run: ``.venv/bin/python bench/diagnose_cost.py [--n 5000] [--fit-epochs 100] [--threads 1]``.
Draws Figure-8 (004 App. G.1) to a temporary CSV (x only, as a user would have it), then times
``pyro-vae diagnose --data FILE`` — fitting the VAE (``fit-data``, 100 epochs) and every check at
its defaults (1000 held-out points, 1000 particles, PSIS k̂ on 200 points, 10 epochs of the
flow) — in a fresh process, and prints the total, the time of each check and the load average
(``uptime``) before and after. Target: under 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--fit-epochs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (OMP_NUM_THREADS) of the timed process")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "data.csv"
        subprocess.run([sys.executable, "-m", "pyro_vae.cli.main", "sample", "figure8", "-n", str(args.n), "--seed", "1",
                        "--out", str(csv)], check=True, capture_output=True)
        lines = csv.read_text().splitlines()
        csv.write_text("\n".join(",".join(line.split(",")[:2]) for line in lines) + "\n")  # drop the true z
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        cmd = [sys.executable, "-c",
               f"import torch, sys; torch.set_num_threads({args.threads}); from pyro_vae.cli import main; "
               f"sys.exit(main(sys.argv[1:]))",
               "diagnose", "--data", str(csv), "--fit-epochs", str(args.fit_epochs), "--runs-dir", str(Path(tmp) / "runs"),
               "--json", "--quiet"]
        print(f"before: {_uptime()}")
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        total = time.perf_counter() - start
        print(f"after:  {_uptime()}")
    if done.returncode != 0:
        print(done.stderr[-2000:])
        raise SystemExit(f"diagnose failed with exit code {done.returncode}")
    report = json.loads(done.stdout)
    checks = report["context"]["seconds"]
    print(f"pyro-vae diagnose --data <{args.n} x 2 CSV> (fit {args.fit_epochs} epochs + all checks): {total:.1f} s "
          f"(target < 120 s on 2 cores)")
    print(f"  checks: {sum(checks.values()):.1f} s — " + ", ".join(f"{k} {v:.1f}" for k, v in checks.items()))
    print(f"  fit, loading and start-up: {total - sum(checks.values()):.1f} s")
    print("  verdicts: " + ", ".join(f"{c['key']} {c['verdict']}" for c in report["checks"]))


if __name__ == "__main__":
    main()
