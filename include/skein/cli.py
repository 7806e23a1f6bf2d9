"""``skein``: the engine from a shell, for local use and consumers' own CI.

Exit codes: 0 done, 2 bad input (campaign file, arguments), 3 done but something was
escalated to a human, 4 a simulation refuted a patch, 5 (``skein run``) the campaign was
rolled back or rejected, 1 unexpected failure, 130 interrupted (SIGINT).
User errors are one message each, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from skein.cli_checks import (campaign_problems, check_waves, check_writable, deployed_campaigns,
                              fraction_arg, validate_paths, workers_arg)
from skein.errors import SkeinError

EXIT_USER_ERROR = 2
EXIT_ESCALATED = 3  # the work is done, but a human must look at something
EXIT_SIMULATION_FAILED = 4  # a patch changed results on data: it must not be applied
EXIT_CONSUMERS_FAILED = 4  # skein run: that, or a consumer's apply or monitoring failed
EXIT_NOT_APPLIED = 5  # skein run: rolled back or rejected
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C)


def _cmd_discover(args) -> int:
    from skein.discovery import discover, render_text
    from skein.spec import load_campaign

    report = discover(load_campaign(args.campaign), workers=args.workers)
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        print(render_text(report))
    return 0


def _cmd_validate(args) -> int:
    from skein.campaign_files import duplicate_ids
    from skein.errors import SpecErrors
    from skein.spec import load_campaign

    campaigns, problems = {}, []
    for path in validate_paths(args.campaign):
        try:
            campaigns[path] = load_campaign(path)
        except SpecErrors as exc:
            problems.extend(exc.errors)
    deployed = deployed_campaigns(set(campaigns))
    problems += [p for path, p in duplicate_ids({**deployed, **campaigns}).items() if path in campaigns]
    for campaign in campaigns.values():
        problems += campaign_problems(campaign, args.offline)
    if problems:
        raise SpecErrors(problems)
    for path, campaign in campaigns.items():
        print(f"{path}: campaign {campaign.campaign} is valid")
    return 0


def _cmd_rewrite(args) -> int:
    from skein.rewrite.request import Patch, Unchanged
    from skein.agents.requests import request_for_file
    from skein.agents.rule import rewrite
    from skein.discovery import connect
    from skein.spec import check_dialect, load_campaign

    campaign = load_campaign(args.campaign)
    if args.dialect is not None:
        try:
            check_dialect(args.dialect)
        except ValueError as exc:
            raise SkeinError(f"--dialect: {exc}") from None
    warehouse = connect(campaign)
    path = Path(args.file)
    if not path.is_file():
        print(f"skein: {path}: no such file", file=sys.stderr)
        return EXIT_USER_ERROR
    request = request_for_file(campaign, warehouse.schemas(), path, args.dialect,
                               warehouse.default_schema)
    result = rewrite(request)
    if isinstance(result, Unchanged):
        # Not a human's problem (issue 19): the file stays as it is, printed as it is.
        print(f"skein: {path}: unchanged: {result.reason}", file=sys.stderr)
        sys.stdout.write("" if args.diff else request.text)
        return 0
    if not isinstance(result, Patch):
        print(f"skein: {path}: escalated: {result.reason}", file=sys.stderr)
        return EXIT_ESCALATED
    sys.stdout.write(result.diff if args.diff else result.text)
    return 0


def _cmd_plan(args) -> int:
    from skein.pipeline import open_plan, plan_campaign
    from skein.spec import load_campaign

    from skein.console import progress_bars

    from skein.rundir import RunDirectory

    campaign = load_campaign(args.campaign)
    out = _output_dir(args.out)
    RunDirectory(out).claim_for_plan()  # never over a user's own files
    ctx = open_plan(campaign, out)
    with progress_bars() as bars:
        if bars is not None:
            ctx.progress = bars
        summary = plan_campaign(ctx, workers=args.workers, simulate=not args.no_simulate)
    plan = summary.plan
    print_plan(plan, summary.waves, args.out)
    if plan.counts["failed"]:
        return EXIT_SIMULATION_FAILED
    return 0 if plan.counts["escalated"] == 0 else EXIT_ESCALATED


def print_plan(plan, waves: dict[str, list[str]], where: str) -> None:
    """The plan's counts (in ``skein.statuses``' words), what needs a human and why, and why
    the numbers differ (``skein plan``, and ``skein run --dry-run``)."""
    from collections import Counter

    from skein.console import wave_counts
    from skein.evidence import plan_notes
    from skein.statuses import STATUSES, of_plan

    statuses = {i.id: of_plan(i.status, i.simulation) for i in plan.items}
    counts = Counter(statuses.values())
    print(f"plan for {plan.campaign} written to {where}: "
          + ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s]))
    print("\n".join(wave_counts(statuses, waves)))
    for item in plan.with_status("escalated", "failed"):
        print(f"  {item.status} {item.id}: {item.reason}")
    for note in plan_notes(plan, waves):
        print(note.replace("`", ""))


def _output_dir(out: str) -> Path:
    """``--out`` as a folder that exists (made if needed), or a ``SkeinError`` saying why not."""
    if not out:  # Path("") is the current folder
        raise SkeinError("--out: an empty path: name the folder to write the plan in")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise SkeinError(f"--out {out}: is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SkeinError(f"--out {out}: cannot create the folder: {exc.strerror}") from None
    check_writable(path, f"--out {out}")
    return path


def _cmd_schema(args) -> int:
    from skein.spec import campaign_json_schema

    text = json.dumps(campaign_json_schema(), indent=2)
    if args.out:
        try:
            Path(args.out).write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            raise SkeinError(f"--out {args.out}: cannot write: {exc.strerror}") from None
    else:
        print(text)
    return 0


def _cmd_demo_fleet(args) -> int:
    from skein.demo.fleet import build_demo_fleet

    campaign = build_demo_fleet(Path(args.out), consumers=args.consumers, seed=args.seed,
                                replace=args.replace)
    print(f"demo fleet with {args.consumers} consumers written to {args.out}")
    print(f"campaign: {campaign}")
    print(f"try: skein discover {campaign}")
    return 0


def _cmd_run(args) -> int:
    from skein.pipeline import run_campaign, start_run
    from skein.store import CampaignStore

    if args.approve is None and not args.dry_run:
        print("skein: run: say what to apply: --approve all|canary|none (or --dry-run to plan "
              "and simulate only)", file=sys.stderr)
        return EXIT_USER_ERROR
    check_waves(args.campaign, args.waves)
    run_id = _new_run_id() if args.run_id is None else args.run_id
    store = CampaignStore(args.store) if args.store else None
    from skein.console import progress_bars, run_summary

    ctx = start_run(args.campaign, run_id, store=store, actor="cli", one_process=True)
    with progress_bars(False if args.json else None) as bars:
        if bars is not None:
            ctx.progress = bars
        outcome = run_campaign(ctx, approve=args.approve or "none", dry_run=args.dry_run,
                               waves=args.waves, error_threshold=args.error_threshold,
                               consumer_filter=args.consumers, soak=not args.no_soak,
                               workers=args.workers)
    if args.json:
        print(json.dumps({"run_id": run_id, "directory": str(ctx.directory), **outcome}, indent=2))
    else:
        if args.dry_run and ctx.files.has_plan():
            print_plan(ctx.files.plan(), ctx.files.waves(), str(ctx.directory))
        print(run_summary(outcome, ctx.campaign_id, run_id, str(ctx.directory)))
    return run_exit_code(outcome)


def run_exit_code(outcome: dict) -> int:
    """``skein run``'s exit code: 5 rolled back, rejected or a step failed; 4 some consumers
    failed (apply, monitoring, or their dry run refuted the patch); 3 something escalated.

    >>> run_exit_code({"status": "finished", "failed": 1, "refuted": 0, "escalated": 2})
    4
    """
    if outcome["status"] in ("rolled_back", "rejected", "failed"):
        return EXIT_NOT_APPLIED
    if outcome["failed"] or outcome.get("refuted"):
        return EXIT_CONSUMERS_FAILED
    return EXIT_ESCALATED if outcome["escalated"] else 0


def _new_run_id() -> str:
    from datetime import UTC, datetime

    return "cli__" + datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%S-%fZ")


def _cmd_audit(args) -> int:
    from skein.store import CampaignStore, render_audit

    store = CampaignStore(args.store) if args.store else CampaignStore()
    events = store.events(args.campaign, args.run)
    if args.json:
        print(json.dumps([e.__dict__ for e in events], indent=2, default=str))
    elif events:
        print(render_audit(events))
    else:
        print(f"no audit events for campaign {args.campaign!r} in {store.url}", file=sys.stderr)
    return 0


def _cmd_unlock(args) -> int:
    from skein.audit import Action
    from skein.store import CampaignStore

    store = CampaignStore(args.store) if args.store else CampaignStore()
    name = f"run:{args.campaign}"
    held = store.lease(name)
    if held is None:
        print(f"campaign {args.campaign!r} is not held by any run")
        return 0
    refused = held.unlock_refusal(force=args.force)
    if refused:
        raise SkeinError(f"campaign {args.campaign!r} not freed: it is held by {held.describe()}; {refused}")
    store.release(name, held.holder)
    _, _, run_id = held.holder.partition("/")
    store.record(args.campaign, run_id, "cli", Action.UNLOCKED, forced=args.force,
                 message=f"was held by {held.describe()}")
    print(f"campaign {args.campaign!r} freed; it was held by {held.describe()}")
    return 0


CAMPAIGN_HELP = "campaign YAML file"
WORKERS_HELP = "processes for parsing and simulation (default: one per core)"


def build_parser() -> argparse.ArgumentParser:
    """The ``skein`` command line: one sub-command per engine entry point."""
    from skein import __version__

    parser = argparse.ArgumentParser(
        prog="skein", description="Dataset migrations as campaigns: find every consumer of a "
        "changing dataset, rewrite it, prove it on data, apply it in waves.",
        epilog="Exit codes: 0 done, 2 bad input, 3 escalated to a human, 4 a simulation refuted "
               "a patch (run: or a consumer failed to apply or in monitoring), 5 not applied "
               "(rolled back or rejected), 1 unexpected failure.")
    parser.add_argument("--version", action="version", version=f"skein {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("discover", help="list the consumers a campaign impacts")
    p.add_argument("campaign", help=CAMPAIGN_HELP)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--workers", type=workers_arg, default=None,
                   help="processes for parsing (default: one per core)")
    p.set_defaults(func=_cmd_discover)

    p = sub.add_parser("validate", help="check campaign files (and the warehouses they name)")
    p.add_argument("campaign", nargs="+", help="campaign YAML files, or folders of them; "
                   "ids must differ between them and from those in $SKEIN_CAMPAIGNS_DIR")
    p.add_argument("--offline", action="store_true", help="do not open the warehouse")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("rewrite", help="rewrite one consumer file for a campaign")
    p.add_argument("campaign", help=CAMPAIGN_HELP)
    p.add_argument("file", help="the consumer's SQL file (UTF-8)")
    p.add_argument("--dialect", help="SQL dialect of the file (default: the campaign's)")
    p.add_argument("--diff", action="store_true", help="print the unified diff, not the new text")
    p.set_defaults(func=_cmd_rewrite)

    p = sub.add_parser("plan", help="discovery and a patch (or escalation) per impacted consumer")
    p.add_argument("campaign", help=CAMPAIGN_HELP)
    p.add_argument("--out", required=True, help="directory for plan.json, patches/ and patched/")
    p.add_argument("--workers", type=workers_arg, default=None, help=WORKERS_HELP)
    p.add_argument("--no-simulate", action="store_true",
                   help="skip the dry run of every patch on the warehouse's data")
    p.set_defaults(func=_cmd_plan)

    _add_run(sub)
    _add_tools(sub)
    return parser


def _add_tools(sub) -> None:
    p = sub.add_parser("unlock", help="free a campaign that a dead run still holds (never a live one)")
    p.add_argument("campaign", help="campaign id")
    p.add_argument("--force", action="store_true",
                   help="free it from a holder this host cannot check (another host, an Airflow "
                        "DAG run) that you know is dead; a live process here is never freed")
    p.add_argument("--store", help="campaign store URL")
    p.set_defaults(func=_cmd_unlock)

    p = sub.add_parser("audit", help="print a campaign's audit log")
    p.add_argument("campaign", help="campaign id")
    p.add_argument("--run", help="only this run id")
    p.add_argument("--json", action="store_true", help="print the events as JSON")
    p.add_argument("--store", help="campaign store URL")
    p.set_defaults(func=_cmd_audit)

    p = sub.add_parser("schema", help="print the JSON Schema of campaign files")
    p.add_argument("--out", help="write to this file instead of stdout")
    p.set_defaults(func=_cmd_schema)

    p = sub.add_parser("demo-fleet", help="build the demo warehouse, repos and campaign")
    p.add_argument("--out", required=True, help="directory to create")
    p.add_argument("--consumers", type=int, default=40, help="how many consumers (default 40)")
    p.add_argument("--seed", type=int, default=7,
                   help="random seed: the same seed builds the same fleet (default 7)")
    p.add_argument("--replace", action="store_true",
                   help="rebuild an earlier fleet even where it holds changes of your own")
    p.set_defaults(func=_cmd_demo_fleet)


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run a whole campaign without Airflow: plan, approve, waves",
                       epilog="Exit codes: 0 finished, 2 bad input, 3 finished with escalations, "
                              "4 finished but some consumers failed (refuted by their dry run, "
                              "or their apply or monitoring failed), 5 rolled back, rejected or "
                              "a step failed.")
    p.add_argument("campaign", help=CAMPAIGN_HELP)
    p.add_argument("--run-id", help="default: cli__<UTC time>; reuse one to continue a run")
    p.add_argument("--approve", choices=["all", "canary", "none"],
                   help="the approval's answer: all waves, the canary wave only, or none "
                        "(required unless --dry-run)")
    p.add_argument("--dry-run", action="store_true", help="plan and simulate; apply nothing")
    p.add_argument("--waves", nargs="+", help="only these waves")
    p.add_argument("--error-threshold", type=fraction_arg,
                   help="override the campaign's threshold (0 to 1)")
    p.add_argument("--consumers", help="only consumers whose id matches this glob (and the upstream they read)")
    p.add_argument("--no-soak", action="store_true", help="do not wait the waves' soak time")
    p.add_argument("--workers", type=workers_arg, default=None, help=WORKERS_HELP)
    p.add_argument("--store", help="campaign store URL (default: $SKEIN_STORE_URL or SQLite "
                   "in $SKEIN_HOME)")
    p.add_argument("--json", action="store_true",
                   help="print the outcome as JSON (for scripts) instead of a summary")
    p.set_defaults(func=_cmd_run)


def main(argv: list[str] | None = None) -> int:
    import logging

    # sqlglot logs "Falling back to parsing as a 'Command'" with SQL fragments for statements
    # it only half understands; Skein reports what matters per consumer instead.
    logging.getLogger("sqlglot").setLevel(logging.ERROR)
    # File names that are not UTF-8 (held as surrogates) are printed escaped, not a traceback.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    argv = sys.argv[1:] if argv is None else argv
    if any("\0" in arg for arg in argv):  # no path or name holds one; os.stat raises on it
        print("skein: an argument holds a NUL byte", file=sys.stderr)
        return EXIT_USER_ERROR
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SkeinError as exc:
        print(f"skein: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # `skein discover ... | head`
        return 0
    except KeyboardInterrupt:  # Ctrl-C: the shell's convention, 128 + SIGINT, no traceback
        print("skein: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
