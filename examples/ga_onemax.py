"""A genetic algorithm with DEAP: OneMax, its fitness evaluations spread over the workers.

DEAP calls ``toolbox.map`` to evaluate each generation; registering
``futures.map`` there is the whole change from a serial run. The ``creator``
classes are made at module level: every worker imports this script (under a
name other than ``__main__``), so ``creator.Individual`` exists there too and
individuals travel by reference to it. The root's part stays under
``if __name__ == "__main__":``.

Selection, crossover and mutation draw from ``random`` in the root only, so a
given ``--seed`` gives the same run whatever the number of workers.

    pip install deap                                       # or: pip install -r examples/requirements.txt
    dockkit run examples/ga_onemax.py -n 4
    dockkit run examples/ga_onemax.py -n 4 --length 200 --generations 80 --seed 7
    dockkit up --requirements examples/requirements.txt    # a cluster whose image has deap
    dockkit run examples/ga_onemax.py

It prints the best fitness of every tenth generation and the best individual's.
"""

import argparse
import random

from deap import algorithms, base, creator, tools

from dockkit import futures

creator.create("FitnessMax", base.Fitness, weights=(1.0,))
creator.create("Individual", list, fitness=creator.FitnessMax)


def ones(individual) -> tuple[int]:
    """OneMax's fitness: the number of ones (a tuple, as DEAP wants)."""
    return (sum(individual),)


def make_toolbox(length: int) -> base.Toolbox:
    toolbox = base.Toolbox()
    toolbox.register("bit", random.randint, 0, 1)
    toolbox.register("individual", tools.initRepeat, creator.Individual, toolbox.bit, length)
    toolbox.register("population", tools.initRepeat, list, toolbox.individual)
    toolbox.register("evaluate", ones)
    toolbox.register("mate", tools.cxTwoPoint)
    toolbox.register("mutate", tools.mutFlipBit, indpb=0.05)
    toolbox.register("select", tools.selTournament, tournsize=3)
    toolbox.register("map", futures.map)  # the evaluations run on the workers
    return toolbox


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=100, help="bits per individual")
    parser.add_argument("--population", type=int, default=300)
    parser.add_argument("--generations", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    random.seed(args.seed)

    toolbox = make_toolbox(args.length)
    best = tools.HallOfFame(1)
    stats = tools.Statistics(lambda individual: individual.fitness.values[0])
    stats.register("max", max)
    _, logbook = algorithms.eaSimple(toolbox.population(n=args.population), toolbox, cxpb=0.5,
                                     mutpb=0.2, ngen=args.generations, stats=stats,
                                     halloffame=best, verbose=False)
    for record in logbook[::10]:
        print(f"generation {record['gen']}: best {record['max']:.0f}")
    print(f"best individual: {best[0].fitness.values[0]:.0f} of {args.length} ones "
          f"after {args.generations} generations (seed {args.seed})")


if __name__ == "__main__":
    main()
