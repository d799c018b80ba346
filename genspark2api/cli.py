"""Command line: `python genspark2api.py [--demo] [--host H] [--port P]`.

hypercorn runs from code under trio (python-stack.md §3): one bind address (and with
`METRICS_BIND` a second listener serving only /metrics), graceful shutdown on SIGTERM and SIGINT
(also as PID 1 in a container, where Python would otherwise ignore SIGTERM), SIGHUP re-reads
`GS_COOKIE_FILE`.
"""

from __future__ import annotations

import argparse
import errno
import gc
import logging
import os
import signal
import sys
from collections.abc import Mapping
from functools import partial

import trio
from hypercorn.config import Config
from hypercorn.logging import Logger
from hypercorn.trio import serve

from . import logs
from .api import client_deadlines
from .api.app import create_app
from .api.observe import metrics_only_app
from .core.media_links import MEDIA_PATH
from .pool.cookies import parse_cookie_specs
from .pool.store import StateStore, StoreError, open_store
from .redact import mask_capability_path, mask_secret
from .runtime import Runtime, cookie_entries, read_cookie_file
from .settings import Settings, SettingsError, deprecated_in

log = logging.getLogger("genspark2api")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="genspark2api", description="OpenAI-compatible API over Genspark.ai")
    parser.add_argument("--demo", action="store_true",
                        help="run together with the built-in Genspark simulator (no cookie needed)")
    parser.add_argument("--host", help="bind address (default: $HOST or 0.0.0.0)")
    parser.add_argument("--port", type=int, help="listen port (default: $PORT or 7055)")
    return parser.parse_args(argv)


def load(env: Mapping[str, str], args: argparse.Namespace) -> Settings:
    settings = Settings.from_env(env)
    changes: dict[str, object] = {}
    if args.host:
        changes["host"] = args.host
    if args.port is not None:
        changes["port"] = args.port
    return settings.replace(**changes) if changes else settings


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = parse_args(argv)
    env = dict(os.environ if env is None else env)
    try:
        settings = load(env, args)
    except SettingsError as exc:
        print(f"genspark2api: {exc}", file=sys.stderr)
        return 2
    if settings.cookie_file and not args.demo:
        try:
            read_cookie_file(settings.cookie_file)
        except (OSError, ValueError) as exc:  # ValueError: not UTF-8
            print(f"genspark2api: GS_COOKIE_FILE={settings.cookie_file!r} cannot be read: {exc}", file=sys.stderr)
            return 2
    if not args.demo:
        try:  # a line's `| proxy=…` or `| label=…` is checked before anything starts
            parse_cookie_specs(cookie_entries(settings))
        except ValueError as exc:
            where = f"GS_COOKIE_FILE={settings.cookie_file!r}" if settings.cookie_file else "GS_COOKIE"
            print(f"genspark2api: {where}: {exc}", file=sys.stderr)
            return 2
    logs.configure(settings.log_format, debug=settings.debug)
    if not settings.debug:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upstream call is noise
    for warning in deprecated_in(env):
        log.warning(warning)
    if not args.demo and not settings.cookies and not settings.cookie_file:
        print(
            "genspark2api: no Genspark cookie: set GS_COOKIE (or GS_COOKIE_FILE), "
            "or run with --demo to try the built-in simulator",
            file=sys.stderr,
        )
        return 2
    try:
        store = open_store(settings.data_dir, settings.data_dir_fallback)
    except StoreError as exc:
        print(f"genspark2api: {exc}. Fix DATA_DIR (a damaged database may be moved away: a new one is "
              "created), or set DATA_DIR_FALLBACK=memory to start without saved state.", file=sys.stderr)
        return 2
    try:
        trio.run(run, settings, args.demo, store)
    except KeyboardInterrupt:
        pass
    except (OSError, BaseExceptionGroup) as exc:
        error = bind_error(exc)
        if error is None:
            raise
        # One line like every other start error, not hypercorn's exception group.
        where = f"{settings.host}:{settings.port}" + (f" or {settings.metrics_bind}" if settings.metrics_bind else "")
        print(f"genspark2api: cannot listen on {where}: {error.strerror or error}", file=sys.stderr)
        return 2
    finally:
        store.close()  # normally closed by the app's shutdown already; a second close does nothing
    return 0


BIND_ERRNOS = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)


def bind_error(exc: BaseException) -> OSError | None:
    """The bind failure inside what trio.run raised, if that is what it was."""
    if isinstance(exc, OSError):
        return exc if exc.errno in BIND_ERRNOS else None
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = bind_error(inner)
            if found is not None:
                return found
    return None


# Python's young-generation collection runs every 700 net allocations of container objects and
# walks every young object still alive: with 50 requests in flight that is their whole working
# set, 1.5 ms a time, 0.4 ms of CPU per request in all (and the older generations' passes over
# every module, class and function loaded at start, 75 ms each, were the long pauses of the
# 50-client tail). Measured on the benchmark's 50-client non-stream run: 720 ms of collection per
# 1,000 requests with the defaults, 110-140 ms with the start-up objects frozen and a young
# threshold of 20,000 (measured with an oldest-generation ratio of 100, before it went back to 10).
# Reference counting still frees nearly everything at once; only cycles wait for a collection,
# and the oldest generation keeps Python's ratio (10): with start-up frozen its pass is small.
GC_THRESHOLDS = (20_000, 20, 10)


def tune_gc() -> None:
    """Freeze what start-up made (modules, app, settings: never garbage, never scanned again)
    and collect the young generation less often (GC_THRESHOLDS)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


GRACEFUL_TIMEOUT = 5.0  # hypercorn's wait for requests in flight after SIGTERM


async def wait_for_signals(runtime: Runtime) -> None:
    """Return on SIGTERM/SIGINT (the shutdown trigger); SIGHUP re-reads the cookies."""
    signals = [signal.SIGTERM, signal.SIGINT] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    with trio.open_signal_receiver(*signals) as received:
        async for signum in received:
            if signum == getattr(signal, "SIGHUP", None):
                runtime.reload_cookies("SIGHUP")
                continue
            log.info("signal %s: shutting down", signal.Signals(signum).name)
            runtime.begin_shutdown(grace=GRACEFUL_TIMEOUT - 1.5)
            return


class MaskingLogger(Logger):
    """hypercorn's logger with media capability tokens masked in access-log paths (DEBUG=1)."""

    def atoms(self, request, response, request_time):  # type: ignore[no-untyped-def]
        masked = {**request, "path": mask_capability_path(request["path"], MEDIA_PATH)}
        return super().atoms(masked, response, request_time)  # type: ignore[arg-type]


def bound_client_deadlines(config: Config, settings: Settings) -> None:
    """CLIENT_SEND_TIMEOUT and HEAD_TIMEOUT, which hypercorn lacks (api/client_deadlines.py)."""
    client_deadlines.install()
    setattr(config, client_deadlines.SEND_TIMEOUT, settings.client_send_timeout)
    setattr(config, client_deadlines.HEAD_TIMEOUT, settings.head_timeout)


def hypercorn_config(settings: Settings) -> Config:
    config = Config()
    host = settings.host
    config.bind = [f"{host}:{settings.port}"]
    config.logger_class = MaskingLogger
    if settings.debug:
        # JSON lines need every line through our handler; text keeps hypercorn's own stdout lines.
        config.accesslog = logging.getLogger("hypercorn.access") if settings.log_format == "json" else "-"
    else:
        config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # through our handler, printed once
    config.graceful_timeout = GRACEFUL_TIMEOUT
    # Outlive the idle timeout of a reverse proxy in front. hypercorn's idle timer runs until a
    # whole request head has arrived; HEAD_TIMEOUT shortens it once a head begins.
    config.keep_alive_timeout = settings.client_idle_timeout
    config.backlog = settings.listen_backlog  # hypercorn's 100 made connection bursts wait for SYN retries
    bound_client_deadlines(config, settings)
    return config


async def run(settings: Settings, demo: bool, store: StateStore | None = None) -> None:
    async with trio.open_nursery() as nursery:
        if demo:
            from .simulator import Simulator, serve_simulator

            simulator = Simulator()
            sim_url = await nursery.start(serve_simulator, simulator, "127.0.0.1", 0)
            # The simulator's token service stands in for RECAPTCHA_PROXY_URL: its image agent wants
            # a fresh token per request, as the real one does (§12.6.1).
            settings = settings.replace(base_url=sim_url, cookies=("session_id=demo",), cookie_file="",
                                        recaptcha_proxy_url=settings.recaptcha_proxy_url or sim_url)
            log.info("demo mode: upstream is the built-in Genspark simulator at %s (answers are simulated)", sim_url)
        runtime = Runtime(settings, store=store)
        app = create_app(runtime)
        announce(settings, runtime, demo)
        tune_gc()
        config = hypercorn_config(settings)
        async def serve_then_stop(task_status: trio.TaskStatus) -> None:
            await serve(app, config, shutdown_trigger=lambda: wait_for_signals(runtime), task_status=task_status)
            nursery.cancel_scope.cancel()  # stops the simulator of --demo too

        binds = await nursery.start(serve_then_stop)
        if settings.metrics_bind:
            metrics_config = Config()
            metrics_config.bind = [settings.metrics_bind]
            metrics_config.accesslog = None
            metrics_config.errorlog = logging.getLogger("hypercorn.error")
            # Ends with the nursery, which serve_then_stop cancels once the main server has stopped.
            metrics_binds = await nursery.start(partial(serve, metrics_only_app(runtime.metrics), metrics_config,
                                                        shutdown_trigger=trio.sleep_forever))
            log.info("metrics for scrapers (no key): %s/metrics", metrics_binds[0] if metrics_binds else settings.metrics_bind)
        shown = binds[0] if binds else f"http://{settings.host}:{settings.port}"
        base = shown.replace("0.0.0.0", "127.0.0.1").replace("[::]", "[::1]") + settings.route_prefix + "/v1"
        # Never the key itself (the line above masks it too): the shell fills it in.
        auth = ' -H "Authorization: Bearer $API_SECRET"' if settings.api_secrets else ""
        # With LOG_FORMAT=json every line of the output is a JSON object: these become log lines.
        say = log.info if settings.log_format == "json" else partial(print, flush=True)
        say(f"genspark2api is serving: base URL {base}")
        say(
            f"try: curl -s {base}/chat/completions -H 'Content-Type: application/json'{auth} "
            "-d '{\"model\":\"claude-sonnet-4-6\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello!\"}]}'"
        )


def announce(settings: Settings, runtime: Runtime, demo: bool) -> None:
    if not settings.api_secrets:
        log.warning("API_SECRET is not set: THE API IS OPEN TO ANYONE WHO CAN REACH THIS PORT")
    else:
        log.info("API keys accepted: %s", ", ".join(f"{k.name} {mask_secret(k.secret)}" for k in settings.client_keys))
    log.info("upstream %s, chat protocol %s, %d cookie(s):", settings.base_url, settings.chat_protocol, len(runtime.pool))
    for line in runtime.pool.summary().splitlines():
        log.info("  %s", line)
    log.info("token counting: %s", runtime.counter.description)
    for line in runtime.restored:
        log.info("state: %s", line)
