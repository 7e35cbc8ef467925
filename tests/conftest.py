"""Shared fixtures: a fake Dessert API behind httpx2.MockTransport, and the real (faulty) sandbox on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from dessert_mcp.config import Settings
from dessert_mcp.http import HTTPOptions
from dessert_mcp.http.app import build_app
from tests.support.api import CANARY_KEY, FAKE_BASE_URL, FakeDessertAPI
from tests.support.faults import ThreadedFaultySandbox
from tests.support.measured import HOME_USER_DIRS, mirror_home
from tests.support.processes import USER_DIRS
from tests.support.servers import ServedApp, sandbox_settings, serve_app

TESTS = Path(__file__).parent
# Families whose session or module fixtures are heavy (a PostgreSQL cluster and Redis, the built wheel and bundle,
# the MCP Inspector and a browser): under `pytest -n N --dist loadgroup` (make test) each family runs on one worker,
# which builds them once; the families have the most tests, so xdist hands them out first and the short tests fill in
# around them. Every other test goes to whichever worker is free (the examples' environments are cached on disk).
ONE_WORKER_FAMILIES = ("packaging", "dashboard", "auth", "storage", "bundle", "fanout")


def _family(nodeid: str) -> str | None:
    """`tests/<family>/...::test` -> the family, when it is one of ONE_WORKER_FAMILIES."""
    parts = nodeid.split("::", 1)[0].split("/")
    return parts[1] if len(parts) > 2 and parts[0] == TESTS.name and parts[1] in ONE_WORKER_FAMILIES else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        family = _family(item.nodeid)
        if family is not None:
            item.add_marker(pytest.mark.xdist_group(family))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadgroup` grouping the families by their path, not by the xdist_group marks alone: pytest-xdist
    carries a mark to the scheduler by renaming the test (`nodeid@group`), which pytest 9.2 no longer lets it do,
    and which it does before a conftest's marks are added; both left every family split over the workers."""
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class FamilyScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            family = _family(nodeid)
            return family if family is not None else super()._split_scope(nodeid)

    return FamilyScheduling(config, log)


@pytest.fixture(autouse=True)
def _no_background_polls(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ledger's poller reads Dessert on its own schedule; tests count the upstream requests their calls make, so
    in-process servers get a poller that reads nothing, unless the test is marked `poller`. (Servers in subprocesses
    read an account first `DESSERT_LEDGER_POLL_MAX_S` after it appears, or one interval after a call's answer: 5
    minutes for the sandbox's idle account.)"""
    if request.node.get_closest_marker("poller") is None:
        from dessert_mcp.ledger.poller import Poller

        async def idle(self: Poller) -> None:
            await anyio.sleep_forever()

        monkeypatch.setattr(Poller, "run", idle)


@pytest.fixture(autouse=True, scope="session")
def _user_dirs_in_a_temp_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test writes to the real user data or state directory (where the ledger and the auth wing keep their
    databases by default), nor does any server a test starts: they inherit this environment, or are given it
    (`tests.support.measured.user_dirs_env`).

    A stdio server started through the SDK gets only HOME and a few more variables from this process. So HOME is a
    mirror of the real one (its config, caches and tools, as symlinks) without dessert-mcp's own directories: a
    server given no XDG_* directory writes there, and the session fails at its end, naming what was written, rather
    than filling the user's real ledger."""
    patch = pytest.MonkeyPatch()
    for name in USER_DIRS:
        patch.setenv(name, str(tmp_path_factory.mktemp(name.lower())))
    home = tmp_path_factory.mktemp("home")
    mirror_home(Path.home(), home)
    patch.setenv("HOME", str(home))
    yield
    patch.undo()
    written = sorted(str(p) for d in HOME_USER_DIRS for p in (home / d).glob("*"))
    if written:
        pytest.fail(
            "A server a test started wrote to the user's own data directory (it was given HOME but no XDG_* "
            f"directory; pass tests.support.measured.user_dirs_env()): {written}",
            pytrace=False,
        )


@pytest.fixture
def fake_api() -> FakeDessertAPI:
    return FakeDessertAPI()


@pytest.fixture
def settings() -> Settings:
    return Settings.from_env({"DESSERT_API_KEY": CANARY_KEY, "DESSERT_API_BASE_URL": FAKE_BASE_URL})


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[ThreadedFaultySandbox]:
    """One real sandbox API on 127.0.0.1 for the whole session."""
    with ThreadedFaultySandbox() as sb:
        yield sb


@pytest.fixture
def sandbox(sandbox_server: ThreadedFaultySandbox) -> Iterator[ThreadedFaultySandbox]:
    """The session's sandbox, reset before and after the test: no faults, the initial account, counts at zero."""
    sandbox_server.reset()
    yield sandbox_server
    sandbox_server.reset()


@pytest.fixture(scope="session")
def canary_sandbox() -> Iterator[ThreadedFaultySandbox]:
    """A sandbox that accepts the canary key, so leaks can be looked for on successful paths too."""
    with ThreadedFaultySandbox(key=CANARY_KEY) as sb:
        yield sb


class _SessionServers:
    """dessert-mcp over HTTP, one server per distinct (options, key), kept for the whole session."""

    def __init__(self) -> None:
        self.served: dict[tuple[HTTPOptions, str | None], ServedApp] = {}

    def stop_all(self) -> None:
        # Told to stop together, then waited for together: each takes a few uvicorn ticks to wind down.
        for served in self.served.values():
            served.request_stop()
        for served in self.served.values():
            served.join()


@pytest.fixture(scope="session")
def _session_servers(sandbox_server: ThreadedFaultySandbox) -> Iterator[_SessionServers]:
    servers = _SessionServers()
    try:
        yield servers
    finally:
        servers.stop_all()


@pytest.fixture
def serve(sandbox: ThreadedFaultySandbox, _session_servers: _SessionServers) -> Iterator[Callable[..., str]]:
    """`serve(key=None, transport_seam=None, **HTTPOptions fields)` -> base URL of dessert-mcp served over HTTP,
    against the session's sandbox. A test that replaces the network with `transport_seam` gets its own server."""
    with ExitStack() as own:

        def start(*, key: str | None = None, transport_seam: httpx2.AsyncBaseTransport | None = None, **kw: Any) -> str:
            options = HTTPOptions(**kw).check()
            if transport_seam is None and (options, key) in _session_servers.served:
                return _session_servers.served[(options, key)].url
            app = build_app(sandbox_settings(sandbox, key=key), options, transport=transport_seam)
            if transport_seam is not None:
                url: str = own.enter_context(serve_app(app))
                return url
            served = _session_servers.served[(options, key)] = ServedApp(app)
            return served.url

        yield start
