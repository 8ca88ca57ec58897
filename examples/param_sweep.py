"""A parameter sweep: every point of a grid runs as one task; the table goes to ``results.csv``.

The task is gradient descent with momentum on the Rosenbrock function, for every
pair of learning rate and momentum in the grid; each reports the loss it reached
and the step at which it got below ``--tolerance`` (or none, or ``diverged``).
The root writes one row per grid point to ``results.csv`` in the working
directory and prints the best point. On a cluster the run happens on the head
node, and ``dockkit run`` brings the new ``results.csv`` back to this machine.

    dockkit run examples/param_sweep.py -n 4
    dockkit run examples/param_sweep.py -n 4 --steps 20000 --output sweep.csv
    dockkit up && dockkit run examples/param_sweep.py     # results.csv comes home
"""

import argparse
import csv
import itertools
import math

from dockkit import futures

LEARNING_RATES = (1e-4, 3e-4, 1e-3, 2e-3, 4e-3)
MOMENTA = (0.0, 0.5, 0.8, 0.9, 0.95)
FIELDS = ("learning_rate", "momentum", "loss", "converged_at")


def rosenbrock(x: float, y: float) -> tuple[float, float, float]:
    """The function's value and gradient at (x, y); its minimum is 0 at (1, 1)."""
    value = (1 - x) ** 2 + 100 * (y - x * x) ** 2
    return value, -2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)


def descend(learning_rate: float, momentum: float, steps: int, tolerance: float) -> dict:
    """Run heavy-ball gradient descent from (-1.5, 2); one row of the results table."""
    x, y, vx, vy = -1.5, 2.0, 0.0, 0.0
    converged_at = ""
    for step in range(1, steps + 1):
        value, gx, gy = rosenbrock(x, y)
        if not math.isfinite(value) or value > 1e12:
            return dict(learning_rate=learning_rate, momentum=momentum, loss=math.inf,
                        converged_at="diverged")
        if value < tolerance:
            converged_at = step
            break
        vx, vy = momentum * vx - learning_rate * gx, momentum * vy - learning_rate * gy
        x, y = x + vx, y + vy
    return dict(learning_rate=learning_rate, momentum=momentum, loss=rosenbrock(x, y)[0],
                converged_at=converged_at)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000, help="step limit of each run")
    parser.add_argument("--tolerance", type=float, default=1e-6)
    parser.add_argument("--output", default="results.csv")
    args = parser.parse_args()
    grid = list(itertools.product(LEARNING_RATES, MOMENTA))

    rows = list(futures.map(descend, *zip(*grid), itertools.repeat(args.steps),
                            itertools.repeat(args.tolerance)))

    with open(args.output, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    best = min(rows, key=lambda row: row["loss"])
    converged = sum(isinstance(row["converged_at"], int) for row in rows)
    print(f"wrote {len(rows)} rows to {args.output}; {converged} runs converged")
    print(f"best: learning_rate={best['learning_rate']} momentum={best['momentum']} "
          f"loss={best['loss']:.3g} converged_at={best['converged_at'] or 'never'}")


if __name__ == "__main__":
    main()
