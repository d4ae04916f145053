"""`emorec data inspect` and `emorec data fixtures`."""

from __future__ import annotations

import json



def cmd_inspect(args) -> int:
    from emorec.data import load_dataset
    from emorec.data.inspect import counts, table

    from emorec.config import parse_options

    options = parse_options(args.option, "--option")
    ds = load_dataset(args.dataset, args.path, on_bad_row=args.on_bad_row, options=options)
    c = counts(ds)
    print(json.dumps(c, indent=2) if args.json else table(c))
    return 0


def cmd_fixtures(args) -> int:
    from emorec.data.fixtures import make_all

    for name, path in make_all(args.out, seed=args.seed, overwrite=args.overwrite).items():
        print(f"{name:12s} {path}")
    return 0


def register(sub) -> None:
    d = sub.add_parser("data", help="look at datasets: inspect release files, write fixtures")
    dsub = d.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    i = dsub.add_parser("inspect", help="count utterances per split and label, and what was skipped")
    i.add_argument("--dataset", required=True, help="iemocap, meld, emorynlp, dailydialog, carer, goemotions, custom")
    i.add_argument("--path", required=True, help="directory of the native release files")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument("--on-bad-row", choices=("error", "skip"), default="error")
    i.add_argument("--option", action="append", metavar="key=value", help="loader option (repeatable)")
    i.set_defaults(func=cmd_inspect)
    f = dsub.add_parser("fixtures", help="write small synthetic files in every dataset's native format")
    f.add_argument("out")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--overwrite", action="store_true",
                   help="replace files already there (without it, a DIR holding any of the files is refused)")
    f.set_defaults(func=cmd_fixtures)
