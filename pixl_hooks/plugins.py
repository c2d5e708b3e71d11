"""The one plugin manager of PIXL, and the calls the rest of PIXL makes through it.

Built-in destinations (`DEFAULT_PLUGINS`) and third-party ones (entry-point
group `pixl_destinations`) are registered the same way. Set the environment
variable PIXL_TRACE_HOOKS=1 to log every hook call (pseudonyms and names only,
never secrets) on the `pixl_hooks.trace` logger.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pluggy
from pluggy import HookImpl

from pixl_hooks import hookspecs
from pixl_hooks.types import (
    DestinationInfo,
    DestinationMisconfigured,
    ExportableStudy,
    ExportedStudy,
    ExportReceipt,
    ExtractSummary,
    UnknownDestination,
)

logger = logging.getLogger(__name__)
trace_logger = logging.getLogger("pixl_hooks.trace")

DEFAULT_PLUGINS = (
    "pixl_hooks.destinations.none",
    "pixl_hooks.destinations.ftps",
    "pixl_hooks.destinations.dicomweb",
    "pixl_hooks.destinations.xnat",
    "pixl_hooks.destinations.sftp",
)
ENTRY_POINT_GROUP = "pixl_destinations"
TRACE_ENV = "PIXL_TRACE_HOOKS"
# How long a lifecycle hook (a site's step, not an export) may hold anon's worker.
LIFECYCLE_TIME_LIMIT_SECONDS = 60.0


def make_plugin_manager() -> pluggy.PluginManager:
    """A new manager with the hook specs, the built-ins and every installed third-party plugin."""
    manager = pluggy.PluginManager("pixl")
    manager.add_hookspecs(hookspecs)
    for module_name in DEFAULT_PLUGINS:
        manager.register(importlib.import_module(module_name), name=module_name)
    manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    if os.environ.get(TRACE_ENV, "") not in ("", "0"):
        manager.add_hookcall_monitoring(_trace_before, _trace_after)
    _destination_table(manager)  # fail now if two plugins claim one name
    return manager


@functools.cache
def plugin_manager() -> pluggy.PluginManager:
    """The process's manager, made on first use."""
    return make_plugin_manager()


def list_destinations(manager: pluggy.PluginManager | None = None) -> list[dict[str, Any]]:
    """Every installed destination, for `GET /pixl/destinations` and the TUI."""
    manager = manager or plugin_manager()
    listing = []
    for name, (info, plugin) in sorted(_destination_table(manager).items()):
        listing.append({
            "name": name,
            "module": _module_of(plugin),
            "hooks": sorted(caller.name for caller in manager.get_hookcallers(plugin) or []),
            "dicom": info.dicom,
            "parquet": info.parquet,
            "description": info.description,
        })
    return listing


def list_plugins(manager: pluggy.PluginManager | None = None) -> list[dict[str, Any]]:
    """Every registered plugin, the hooks it implements and the destinations it provides,
    for `GET /pixl/plugins` and `pixl-tui plugins`."""
    manager = manager or plugin_manager()
    provided: dict[int, list[str]] = {}
    for name, (_, plugin) in _destination_table(manager).items():
        provided.setdefault(id(plugin), []).append(name)
    listing = []
    for name, plugin in manager.list_name_plugin():
        if plugin is None:  # blocked
            continue
        listing.append({
            "name": name,
            "module": _module_of(plugin),
            "hooks": sorted(caller.name for caller in manager.get_hookcallers(plugin) or []),
            "destinations": sorted(provided.get(id(plugin), [])),
        })
    return sorted(listing, key=lambda entry: entry["name"])


@dataclass(frozen=True)
class HookCall:
    """How one plugin's implementation of a lifecycle hook went; `error` is None when it returned."""

    plugin: str
    error: str | None


def call_lifecycle_hook(
    hook_name: str,
    manager: pluggy.PluginManager | None = None,
    *,
    time_limit: float | None = None,
    **kwargs: Any,
) -> list[HookCall]:
    """Call every implementation of a lifecycle hook on its own, so that one raising or
    hanging keeps no other, and no export, waiting; what each did, in pluggy's order.
    `time_limit`: seconds each may take (by default LIFECYCLE_TIME_LIMIT_SECONDS)."""
    manager = manager or plugin_manager()
    time_limit = LIFECYCLE_TIME_LIMIT_SECONDS if time_limit is None else time_limit
    hook = getattr(manager.hook, hook_name)
    everyone = [plugin for _, plugin in manager.list_name_plugin() if plugin is not None]
    calls = []
    for impl in reversed(hook.get_hookimpls()):  # pluggy calls the last registered first
        alone = manager.subset_hook_caller(
            hook_name, remove_plugins=[p for p in everyone if p is not impl.plugin]
        )
        calls.append(HookCall(impl.plugin_name,
                              _call_in_time(alone, (hook_name, impl.plugin_name), time_limit, kwargs)))
    return calls


# (hook, plugin) -> when its call that has not returned yet began (time.monotonic)
_still_running: dict[tuple[str, str], float] = {}
_still_running_lock = threading.Lock()


def _call_in_time(call: Callable[..., Any], key: tuple[str, str], time_limit: float,
                  kwargs: dict[str, Any]) -> str | None:
    """Run `call` in a thread of its own for at most `time_limit` seconds; its error, or
    None. A call that hangs is left running (Python cannot stop a thread), and that
    plugin's hook is not called again until it returns: one stuck thread per hook and
    plugin at most, each missed call recorded as an error."""
    with _still_running_lock:
        started = _still_running.get(key)
        if started is not None:
            return (f"not called: its previous call has not returned after "
                    f"{time.monotonic() - started:.0f} s")
        _still_running[key] = time.monotonic()
    outcome: list[str | None] = []

    def run() -> None:
        try:
            call(**kwargs)
        except Exception as exc:  # noqa: BLE001 - a site's step failing must not stop PIXL's work
            outcome.append(f"{type(exc).__name__}: {exc}"[:500])
        else:
            outcome.append(None)
        finally:
            with _still_running_lock:
                del _still_running[key]

    thread = threading.Thread(target=run, name=f"pixl-hook-{key[1]}", daemon=True)
    thread.start()
    thread.join(time_limit)
    if thread.is_alive():
        return f"did not return within {time_limit:g} s; left running, not called again until it does"
    return outcome[0] if outcome else "ended without returning"


def _module_of(plugin: Any) -> str:
    if inspect.ismodule(plugin):
        return plugin.__name__
    return f"{type(plugin).__module__}.{type(plugin).__qualname__}"


def destination_info(name: str, manager: pluggy.PluginManager | None = None) -> DestinationInfo:
    table = _destination_table(manager or plugin_manager())
    if name not in table:
        known = ", ".join(sorted(table)) or "none installed"
        raise UnknownDestination(f"no installed plugin provides destination {name!r} (known: {known})")
    return table[name][0]


def check_project_destinations(
    project: Any, secrets: Any, manager: pluggy.PluginManager | None = None
) -> list[str]:
    """Problems with a project's destinations (unknown names, wrong kind, missing settings)."""
    manager = manager or plugin_manager()
    problems: list[str] = []
    wanted = {"dicom": project.dicom_destination, "parquet": project.parquet_destination}
    known: list[str] = []
    for kind, name in wanted.items():
        try:
            info = destination_info(name, manager)
        except UnknownDestination as exc:
            problems.append(f"destination.{kind}: {exc}")
            continue
        if not getattr(info, kind):
            problems.append(f"destination.{kind}: destination {name!r} cannot receive {kind} files")
        elif name not in known:
            known.append(name)
    for name in known:
        for answer in manager.hook.pixl_check_destination(
            project=project, destination_name=name, secrets=secrets
        ):
            problems.extend(answer)
    return problems


def export_dicom_study(
    project: Any, study: ExportableStudy, secrets: Any, manager: pluggy.PluginManager | None = None
) -> ExportReceipt:
    """Send one de-identified study to the project's DICOM destination."""
    manager = manager or plugin_manager()
    name = project.dicom_destination
    _require_kind(name, "dicom", manager)
    receipt = manager.hook.pixl_export_dicom_study(
        project=project, destination_name=name, study=study, secrets=secrets
    )
    if receipt is None:
        raise UnknownDestination(f"destination {name!r} did not answer the DICOM export")
    return receipt


def export_parquet(
    project: Any,
    extract_name: str,
    parquet_dir: Path,
    secrets: Any,
    manager: pluggy.PluginManager | None = None,
) -> ExportReceipt:
    """Upload an extract's parquet tree to the project's parquet destination."""
    manager = manager or plugin_manager()
    name = project.parquet_destination
    _require_kind(name, "parquet", manager)
    receipt = manager.hook.pixl_export_parquet(
        project=project, destination_name=name, extract_name=extract_name,
        parquet_dir=parquet_dir, secrets=secrets,
    )
    if receipt is None:
        raise UnknownDestination(f"destination {name!r} did not answer the parquet export")
    return receipt


def _require_kind(name: str, kind: str, manager: pluggy.PluginManager) -> None:
    if not getattr(destination_info(name, manager), kind):
        raise DestinationMisconfigured(f"destination {name!r} cannot receive {kind} files")


def _destination_table(manager: pluggy.PluginManager) -> dict[str, tuple[DestinationInfo, Any]]:
    """name -> (info, plugin); two plugins claiming one name is an error."""
    table: dict[str, tuple[DestinationInfo, Any]] = {}
    for impl in manager.hook.pixl_destinations.get_hookimpls():
        infos = cast(list[DestinationInfo], impl.function() or [])
        for info in infos:
            if info.name in table:
                first = manager.get_name(table[info.name][1])
                raise DestinationMisconfigured(
                    f"destination {info.name!r} is provided by both {first} and "
                    f"{manager.get_name(impl.plugin)}"
                )
            table[info.name] = (info, impl.plugin)
    return table


# --- tracing ----------------------------------------------------------------------------------


def _describe(value: Any) -> str:
    """A loggable stand-in for a hook argument: pseudonyms and names, never secret values."""
    if isinstance(value, (ExportableStudy, ExportedStudy)):
        return f"<study {value.pseudo_study_uid}>"
    if isinstance(value, (ExportReceipt, ExtractSummary)):
        return repr(value)
    if hasattr(value, "slug") and hasattr(value, "dicom_destination"):
        return f"<project {value.slug}>"
    if isinstance(value, (str, Path, int)):
        return repr(str(value))
    return f"<{type(value).__name__}>"


def _trace_before(hook_name: str, hook_impls: Sequence[HookImpl], kwargs: Mapping[str, Any]) -> None:
    arguments = ", ".join(f"{key}={_describe(value)}" for key, value in sorted(kwargs.items()))
    plugins = ", ".join(impl.plugin_name for impl in hook_impls)
    trace_logger.info("hook %s(%s) -> [%s]", hook_name, arguments, plugins)


def _trace_after(
    outcome: pluggy.Result[Any], hook_name: str, hook_impls: Sequence[HookImpl],
    kwargs: Mapping[str, Any],
) -> None:
    if outcome.exception is not None:
        trace_logger.info("hook %s raised %s", hook_name, type(outcome.exception).__name__)
    else:
        trace_logger.info("hook %s returned %s", hook_name, _describe_result(outcome.get_result()))


def _describe_result(result: Any) -> str:
    if isinstance(result, ExportReceipt):
        return repr(result)
    if isinstance(result, list):
        return f"{len(result)} answers"
    return f"<{type(result).__name__}>"
