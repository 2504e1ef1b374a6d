"""The ``aqaa`` command line: one subcommand per stage of the recipe.

Every subcommand takes ``-e/--experiment`` (a name under configs/experiments/ or a YAML
path) and trailing ``key=value`` overrides; the config is checked before any work.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import ConfigError, load_config, to_yaml


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-e", "--experiment", default="quickstart",
                   help="experiment name under configs/experiments/ or a .yaml path (default: quickstart)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. corpus.seed=3")


def cmd_config_show(args) -> int:
    cfg = load_config(args.experiment, args.overrides)
    print(to_yaml(cfg), end="")
    return 0


def cmd_data_build(args) -> int:
    cfg = load_config(args.experiment, args.overrides)
    from .corpus.build import format_counts, format_voice_states
    from .stages import run_corpus

    art = run_corpus(cfg, force=args.force, progress=not args.quiet)
    stats = json.loads((art.path / "stats.json").read_text())
    print(f"\ncorpus artifact: {art.path}")
    print(f"{stats['clips']} clips, {stats['audio_seconds']:.0f} s of audio, synthesised in "
          f"{stats['wall_seconds']:.0f} s with {stats['workers']} processes "
          f"({stats['synthesis_speed']:.1f} audio s per wall s)\n")
    print(format_counts(stats))
    print("\nassistant voice states, measured on the synthesised answers (difference to neutral):\n")
    print(format_voice_states(stats["voice_states"]))
    return 0


def cmd_data_import(args) -> int:
    from .stages import run_import

    cfg = load_config(args.experiment, args.overrides)
    art, report = run_import(cfg, Path(args.manifest), skip_bad=args.skip_bad)
    print(f"imported {report['rows']} rows into {art.path}; splits: "
          + ", ".join(f"{k} {v}" for k, v in report["splits"].items()))
    if args.skip_bad:
        print(f"skipped {report['skipped']} bad rows")
        for line in report["bad"]:
            print(f"  {line}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aqaa", description="AQAA Lab: the Step-Audio-AQAA recipe at small scale.")
    sub = parser.add_subparsers(dest="command", required=True)

    p_cfg = sub.add_parser("config", help="inspect configuration")
    cfg_sub = p_cfg.add_subparsers(dest="action", required=True)
    p = cfg_sub.add_parser("show", help="print the resolved, validated config")
    _add_config_args(p)
    p.set_defaults(func=cmd_config_show)

    p_data = sub.add_parser("data", help="build or import a spoken-QA corpus")
    data_sub = p_data.add_subparsers(dest="action", required=True)
    p = data_sub.add_parser("build", help="synthesise the embedded spoken-QA corpus (Piper + eSpeak NG)")
    _add_config_args(p)
    p.add_argument("--force", action="store_true", help="rebuild even if a complete artifact exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_data_build)
    p = data_sub.add_parser("import", help="import your own JSONL manifest as a corpus")
    p.add_argument("manifest", help="JSONL manifest (see README: 'Bring your own data')")
    p.add_argument("--skip-bad", action="store_true", help="skip bad rows and report how many, instead of failing")
    _add_config_args(p)
    p.set_defaults(func=cmd_data_import)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may come before or after options (argparse alone would stop
    # collecting them at the first option that follows a positional).
    args, extra = parser.parse_known_args(argv)
    unknown = [x for x in extra if x.startswith("-") or "=" not in x]
    if unknown or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    from .corpus.manifest import ManifestError

    try:
        return args.func(args)
    except (ConfigError, ManifestError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
