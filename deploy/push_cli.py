"""``binwatch deploy push`` (docs/deploy.md, "Pushing a model to the fleet"): a signed bundle to the
devices of a site, in stages (canary first), with a failure threshold and rollback; ``--resume``
continues a saved rollout. ``deploy/cli.py`` registers the command.

Which devices: ``--devices a,b`` (exactly these, in this order); ``--group G`` (the members of G at
the site in ``--inventory FILE``, the device list of make-acl.sh: group membership lives in each
agent's config and is not published); ``--all`` (the devices in ``--inventory``, else every device
of the site whose retained ``status`` says ``online``; the others are listed as skipped). Every
device is addressed on its own ``model/desired`` topic, whatever the selection.

Exit codes: 0 every device active, 1 halted and rolled back (or the broker failed us), 2 bad input.
Only typer, rich and the stdlib at module level.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from binwatch.cliutil import fail
from deploy.cli_common import Broker, Ca, Cert, Key, Password, Prefix, Username, Wait, broker_config, connect

log = logging.getLogger(__name__)

__all__ = ["push_cmd"]

_EXIT_INTERRUPTED = 130


def push_cmd(
    bundle: Optional[Path] = typer.Argument(None, help="Signed bundle .tar (not with --resume)."),
    site: Optional[str] = typer.Option(None, "--site", help="Site id."),
    devices: Optional[str] = typer.Option(None, "--devices", help="Device ids, comma-separated, in order."),
    group: Optional[str] = typer.Option(None, "--group", help="The members of this group (--inventory)."),
    all_devices: bool = typer.Option(False, "--all", help="Every device of the site (see --inventory)."),
    inventory: Optional[Path] = typer.Option(
        None, "--inventory", help="Device list of make-acl.sh (SITE/DEVICE [GROUP ...] per line)."
    ),
    publish_dir: Optional[Path] = typer.Option(
        None, "--publish-dir", help="Copy the bundle into this folder (the one deploy serve serves)."
    ),
    url_base: Optional[str] = typer.Option(
        None, "--url-base", help="URL of --publish-dir as devices reach it, e.g. http://10.0.0.5:8088"
    ),
    bundle_url: Optional[str] = typer.Option(
        None, "--bundle-url", help="Take this URL (path, file://, http(s)://) as is; nothing is copied."
    ),
    canary: int = typer.Option(1, "--canary", min=0, help="Devices in the first stage, alone."),
    stages: str = typer.Option("100%", "--stages", help="Cumulative shares after the canary: 10%,50%,100%"),
    max_failures: str = typer.Option(
        "0", "--max-failures", help="Failures tolerated: a count (0: none) or a fraction (0.1, 10%)."
    ),
    stage_timeout: float = typer.Option(600.0, "--stage-timeout", min=0.1, help="Seconds per stage."),
    soak: float = typer.Option(
        0.0, "--soak", min=0.0, help="Seconds to keep watching a passed stage (the agents' update.trial_s)."
    ),
    state_file: Optional[Path] = typer.Option(
        None, "--state", help="Rollout state file (default: ./.binwatch-rollouts/<rollout id>.json)."
    ),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the rollout in this state file."),
    broker: Broker = None,
    prefix: Prefix = None,
    wait: Wait = 1.0,
    username: Username = None,
    password: Password = None,
    ca: Ca = None,
    cert: Cert = None,
    key: Key = None,
) -> None:
    """Push a signed bundle to devices in stages: canary first, then growing shares.

    Each device gets the retained desired state (version, bundle_url, sha256, signature, rollout
    id) on its own model/desired topic and must report active with that version and rollout id
    within --stage-timeout. A failed canary, or more failures than --max-failures, halts the
    rollout and rolls back every device it moved. Exit 0: all active; 1: halted and rolled back;
    2: bad input.
    """
    from deploy.plan import InputError

    creds = (username, password, ca, cert, key)
    try:
        if resume is not None:
            if any((bundle, site, devices, group, all_devices, state_file)):
                raise InputError("--resume continues a saved rollout: give no bundle, targets or --state")
            state, path, cfg = _resumed(resume, broker, prefix, creds)
            link = connect(cfg, state.site, wait)
        else:
            if bundle is None:
                raise InputError("give the bundle .tar to push (or --resume STATE.json)")
            if site is None:
                raise InputError("--site is required")
            cfg = broker_config(broker, prefix, *creds)
            opts = dict(canary=canary, stages=stages, max_failures=max_failures)
            opts.update(stage_timeout=stage_timeout, soak=soak)
            targets = dict(devices=devices, group=group, all_devices=all_devices, inventory=inventory)
            where = dict(publish_dir=publish_dir, url_base=url_base, url=bundle_url)
            state, path, link = _new(bundle, site, cfg, wait, opts, targets, where, state_file)
    except InputError as e:
        raise fail(str(e), 2) from e
    _run(state, path, link)


def _resumed(path: Path, broker: Optional[str], prefix: Optional[str], creds: tuple[Any, ...]) -> Any:
    from deploy.plan import InputError
    from deploy.state import load_state

    state = load_state(path)
    if state.status != "running":
        hint = {
            "completed": "it completed: every device is active",
            "rolled_back": "it was rolled back: start a new push",
            "halted": f"it halted ({state.halt_reason}): finish the rollback with "
            f"binwatch deploy rollback {path}",
        }[state.status]
        raise InputError(f"{path}: nothing to resume: {hint}")
    cfg = broker_config(broker or state.broker, prefix or state.prefix, *creds)
    return state, path, cfg


def _new(
    bundle: Path,
    site: str,
    cfg: Any,
    wait: float,
    opts: dict[str, Any],
    targets: dict[str, Any],
    where: dict[str, Any],
    state_file: Optional[Path],
) -> tuple[Any, Path, Any]:
    """Check everything that can be checked offline, place the bundle, connect, choose the devices,
    and write the first state file."""
    from deploy.bundle_file import bundle_url, read_bundle
    from deploy.cli_common import check_site
    from deploy.plan import parse_max_failures, parse_stages

    check_site(site, cfg.prefix)
    shares = parse_stages(opts["stages"])
    max_failures = parse_max_failures(opts["max_failures"])
    chosen = _check_targets(site, **targets)
    info = read_bundle(bundle)
    url = bundle_url(info, **where)  # copies the bundle (harmless until a desired state names it)
    link = connect(cfg, site, wait)
    try:
        if chosen is None:
            chosen, skipped = _online_devices(link, site)
        else:
            skipped = {}
        state = _initial_state(info, url, site, cfg, chosen, skipped, shares, max_failures, opts)
        path = state_file or _default_path(state.rollout_id)
        state.save(path)
    except BaseException:
        link.stop()
        raise
    return state, path, link


def _check_targets(
    site: str, *, devices: Optional[str], group: Optional[str], all_devices: bool, inventory: Optional[Path]
) -> Optional[list[str]]:
    """The chosen devices, or None for "the online devices of the site" (known after connecting)."""
    from deploy.plan import InputError, parse_devices, read_inventory

    if sum((devices is not None, group is not None, all_devices)) != 1:
        raise InputError("choose the devices with one of --devices a,b, --group G or --all")
    if devices is not None:
        if inventory is not None:
            raise InputError("--inventory goes with --group or --all, not --devices")
        return parse_devices(devices)
    if group is not None:
        if inventory is None:
            raise InputError(
                f"--group {group} needs --inventory FILE (the device list of make-acl.sh): group "
                "membership lives in each agent's config and is not published on the broker"
            )
        found = read_inventory(inventory, site, group)
        if not found:
            raise InputError(f"--inventory {inventory}: no device of site {site} is in group {group}")
        return found
    if inventory is not None:
        found = read_inventory(inventory, site)
        if not found:
            raise InputError(f"--inventory {inventory}: no device of site {site}")
        return found
    return None


def _online_devices(link: Any, site: str) -> tuple[list[str], dict[str, str]]:
    from deploy.plan import InputError

    chosen, skipped = [], {}
    for device in link.devices():
        status = link.status(device)
        if status is not None and status.state == "online":
            chosen.append(device)
        else:
            skipped[device] = f"status {status.state}" if status is not None else "no status"
    if not chosen:
        raise InputError(
            f"--all: no device of site {site} has a retained status 'online' on {link.cfg.broker}"
        )
    return chosen, skipped


def _initial_state(
    info: Any,
    url: str,
    site: str,
    cfg: Any,
    devices: list[str],
    skipped: dict[str, str],
    shares: list[float],
    max_failures: float,
    opts: dict[str, Any],
) -> Any:
    from contract.messages import ModelDesired
    from deploy.plan import allowed_failures, new_rollout_id, plan_stages
    from deploy.state import BundleRecord, DeviceRecord, RolloutState

    rollout_id = new_rollout_id()
    desired = ModelDesired(
        version=info.version,
        bundle_url=url,
        sha256=info.sha256,
        signature=info.signature,
        rollout_id=rollout_id,
    )
    stages = plan_stages(devices, opts["canary"], shares)
    return RolloutState(
        rollout_id=rollout_id,
        site=site,
        prefix=cfg.prefix,
        broker=cfg.broker,
        bundle=BundleRecord(
            file=str(info.path), name=info.name, version=info.version, sha256=info.sha256, url=url
        ),
        desired=desired.to_json_bytes().decode("utf-8"),
        canary=min(opts["canary"], len(devices)),
        stages=stages,
        max_failures=max_failures,
        allowed_failures=allowed_failures(max_failures, len(devices)),
        stage_timeout_s=opts["stage_timeout"],
        soak_s=opts["soak"],
        devices={d: DeviceRecord(stage=i) for i, stage in enumerate(stages) for d in stage},
        skipped=skipped,
    )


def _default_path(rollout_id: str) -> Path:
    from deploy.state import DEFAULT_DIR

    return DEFAULT_DIR / f"{rollout_id}.json"


def _run(state: Any, path: Path, link: Any) -> None:
    from deploy.fleet import LinkError
    from deploy.rollout import Rollout
    from deploy.view import PushView

    out = Console(highlight=False, soft_wrap=True)
    _announce(out, state, path)
    try:
        with PushView(state, link, out) as view:
            rollout = Rollout(state, path, link, view)
            ok = rollout.run()
    except KeyboardInterrupt:
        out.print(
            f"interrupted: continue with binwatch deploy push --resume {path}, or undo with "
            f"binwatch deploy rollback {path}"
        )
        raise typer.Exit(code=_EXIT_INTERRUPTED) from None
    except LinkError as e:
        raise fail(f"{e}; the state is saved: binwatch deploy push --resume {path}", 1) from e
    finally:
        link.stop()
    if not ok:
        out.print(f"rolled back: {', '.join(state.moved()) or 'no device'} (state: {path})")
        raise typer.Exit(code=1)
    version, failed = state.bundle.version, state.failures()
    active = len(state.devices) - len(failed)
    tolerated = f"; failed, within --max-failures: {', '.join(failed)}" if failed else ""
    out.print(f"done: {active} device(s) active on version {version}{tolerated} (state: {path})")


def _announce(out: Console, state: Any, path: Path) -> None:
    b = state.bundle
    out.print(f"rollout {state.rollout_id}: {b.name} v{b.version} (sha256 {b.sha256[:12]}) from {b.url}")
    labels = []
    for i, devices in enumerate(state.stages):
        name = "canary" if i == 0 and state.canary else f"stage {i + 1}"
        labels.append(f"{name}: {', '.join(devices)}")
    out.print(
        f"{len(state.devices)} device(s) of site {state.site} in {len(state.stages)} stage(s): "
        + "; ".join(labels)
    )
    for device, why in state.skipped.items():
        out.print(f"skipped {device} ({why}): push to it once it is online")
    out.print(
        f"tolerated failures: {state.allowed_failures}; stage timeout {state.stage_timeout_s:g} s; "
        f"soak {state.soak_s:g} s; state: {path}"
    )
