"""``pyro-vae datasets`` and ``pyro-vae sample``: the benchmark data sets and draws from them."""

from __future__ import annotations

import argparse

from pyro_vae.cli.common import add_command, parse_key_values, positive_int, print_json, seed_int


def dataset_from_args(name: str, pairs, flag: str = "--data-option"):
    """The data set ``name`` with ``--data-option KEY=VALUE`` parameters; errors name the flag."""
    from pyro_vae.datasets import dataset_names, get_dataset

    params = parse_key_values(pairs, flag)
    if name not in dataset_names():
        raise ValueError(f"dataset {name!r}: unknown data set; expected one of {', '.join(dataset_names())}")
    allowed = type(get_dataset(name)).param_names()
    for key, value in params.items():
        if key not in allowed:
            takes = f"its parameters are {', '.join(allowed)}" if allowed else "it takes none"
            raise ValueError(f"{flag} {key}={value!r}: data set {name!r} has no parameter {key!r}; {takes}")
    try:
        return get_dataset(name, **params)
    except ValueError as err:
        raise ValueError(f"{flag} {err}") from None


def cmd_datasets(args: argparse.Namespace) -> int:
    from pyro_vae.datasets import dataset_table

    rows = dataset_table()
    if args.json:
        print_json(rows)
        return 0
    header = ("name", "K", "D", "σ²", "prior", "conditions (004 §5.1)", "paper")
    table = [(r["name"], r["latent_dim"], r["obs_dim"], f"{r['noise_var']:g}", r["prior"], r["conditions"], r["paper"]) for r in rows]
    widths = [max(len(str(row[i])) for row in [header, *table]) for i in range(len(header))]
    for row in [header, *table]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from pyro_vae import checks
    from pyro_vae.io import ARRAY_EXTENSIONS, save_arrays

    out = checks.output_file("--out", args.out, ARRAY_EXTENSIONS)
    dataset = dataset_from_args(args.name, args.data_option)
    if getattr(dataset, "num_rows", None) is not None:  # the UCI tables are data, not a process
        raise ValueError(f"dataset {args.name!r}: a real data set (UCI) has no generative process to sample from")
    columns = dataset.obs_dim + dataset.latent_dim + int(getattr(dataset, "label_dim", 0) or 0)
    checks.require_memory("-n", args.n, checks.sample_bytes(args.n, columns, csv=out.suffix.lower() == ".csv"))
    drawn = dataset.sample(args.n, seed=args.seed)
    arrays = dict(zip(("x", "z", "y"), (t.cpu().numpy() for t in drawn)))
    path = save_arrays(out, **arrays)
    print(f"wrote {args.n} samples of {args.name} (seed {args.seed}) to {path}")
    return 0


def add_parsers(sub) -> None:
    p = add_command(sub, "datasets", "list the benchmark data sets")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_datasets)

    p = add_command(sub, "sample", "draw x and the true z (and y) from a data set")
    p.add_argument("name", help="a data set (see `pyro-vae datasets`)")
    p.add_argument("-n", type=positive_int, required=True, help="number of points to draw")
    p.add_argument("--seed", type=seed_int, default=0, help="random seed; the same seed draws the same points")
    p.add_argument("--out", required=True, help="FILE.csv (columns x1..xD, z1..zK) or FILE.npz")
    p.add_argument("--data-option", action="append", metavar="KEY=VALUE",
                   help="a data set parameter, e.g. theta=0.5 (repeatable)")
    p.add_argument("--param", action="append", dest="data_option", help=argparse.SUPPRESS)  # deprecated spelling
    p.set_defaults(func=cmd_sample)
