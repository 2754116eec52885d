"""The dashboard in a real headless Chromium (Debian's chromium + chromedriver, driven over the
WebDriver protocol by tests/webdriver.py): log in, find an execution, run an operator action.
Skipped, saying why, only where Chromium cannot be installed."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from durablectl import DurableService, ExecutionFailed, SqliteStore, workflow
from durablectl.dashboard.server import DashboardServer

from .conftest import run
from .webdriver import Browser, browser_paths

TOKEN = "browser-test-token-3b7f"
attempts: list[int] = []


@workflow("browser.flaky", max_attempts=1)
async def flaky(ctx, _):
    done = await ctx.step("first", lambda: "first done")
    if len(attempts) == 0:
        attempts.append(1)
        raise RuntimeError("the first run breaks")
    return done


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    paths = browser_paths()
    if paths is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed "
                    "(.ci/run installs them with apt-get; it could not here)")
    session = Browser(*paths, profile_dir=str(tmp_path / "profile"))
    try:
        yield session
    finally:
        session.quit()


def submit_token(browser: Browser, token: str) -> None:
    """Type ``token`` into the login page and send it."""
    browser.type(browser.find("#token"), token)
    browser.click(browser.find("form.login button"))


def wait_for(predicate, what: str, timeout: float = 15.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_log_in_find_an_execution_and_retry_it(store: SqliteStore, browser: Browser) -> None:
    attempts.clear()

    async def failing_run() -> str:
        async with DurableService(store, [flaky]) as service:
            eid = await service.start_execution(flaky)
            with pytest.raises(ExecutionFailed):
                await service.wait(eid, timeout=10)
            return eid

    execution_id = run(failing_run())
    server = DashboardServer(store, host="127.0.0.1", port=0, token=TOKEN)
    server.start()
    try:
        browser.get(server.url)  # not logged in: sent to the login page
        wait_for(lambda: "/login" in browser.url, "the login page")
        submit_token(browser, "wrong-token")
        wait_for(lambda: "token" in browser.page_source(), "the refusal")
        assert "/login" in browser.url
        submit_token(browser, TOKEN)
        wait_for(lambda: "/login" not in browser.url, "the executions page")

        # find the execution by its id
        browser.type(browser.find("input[name=id]"), execution_id)
        browser.click(browser.find("button[name=go]"))
        wait_for(lambda: execution_id in browser.url, "the execution's page")
        assert "the first run breaks" in browser.page_source()

        # run an operator action: retry, confirmed in the dialog
        form = "form[action$='/api/operator/retry']"
        browser.click(browser.find(f"{form} button"))
        wait_for(lambda: _accepted(browser), "the confirm dialog")
        wait_for(lambda: store.get_execution(execution_id).status == "pending",
                 "the retry to be stored")
    finally:
        server.stop()
    actions = [a.data for a in store.list_audit_entries(execution_id)
               if a.kind == "operator_action"]
    assert actions and actions[-1]["action"] == "retry"
    assert actions[-1]["actor"] == "dashboard"

    async def resumed() -> None:
        async with DurableService(store, [flaky]) as service:
            assert await service.wait(execution_id, timeout=10) == "first done"
    run(resumed())


def _accepted(browser: Browser) -> bool:
    try:
        browser._session("POST", "/alert/accept", {})
    except Exception:
        return False
    return True


def test_an_open_execution_page_reloads_when_the_execution_changes(
        store: SqliteStore, browser: Browser) -> None:
    """The page of an active execution asks every few seconds whether it changed (a bodiless
    304 while it has not) and shows the change once it has."""
    from durablectl import DurableClient, DurableOperator

    client = DurableClient(store)
    client._handoff._database = None  # no daemon here: the start is written directly
    with pytest.warns(UserWarning, match="no worker is running"):
        execution_id = client.start_execution("browser.flaky")
    server = DashboardServer(store, host="127.0.0.1", port=0, token=TOKEN)
    server.start()
    try:
        browser.get(server.url)
        wait_for(lambda: "/login" in browser.url, "the login page")
        submit_token(browser, TOKEN)
        wait_for(lambda: "/login" not in browser.url, "the executions page")
        browser.get(f"{server.url}executions/{execution_id}")
        wait_for(lambda: "pending" in browser.page_source(), "the pending execution")
        time.sleep(7)  # the first poll fetches it, the next ones are answered 304
        shown = browser.page_source()
        live = re.search(r'id="live"[^>]*>([^<]*)<', shown)
        assert live and live.group(1).startswith("live, updated"), live  # a 304 is no error
        assert "force-failed from the browser test" not in shown
        DurableOperator(store).force_fail(execution_id, reason="force-failed from the "
                                          "browser test", actor="test")
        wait_for(lambda: "force-failed from the browser test" in browser.page_source(),
                 "the page to show the change")
    finally:
        server.stop()
