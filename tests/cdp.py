"""Headless Chromium driven over the DevTools protocol (aiohttp's WebSocket client): open a page, run
JavaScript in it, and record every console message, script error and network request it makes."""
from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

from tests.test_report_html import chromium


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws
        self._id = 0
        self._waiting: dict[int, asyncio.Future] = {}
        self.console: list[str] = []     # console calls and log entries (any level)
        self.exceptions: list[str] = []  # uncaught script errors
        self.requests: list[str] = []    # every URL the page asked for
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self._waiting:
                self._waiting.pop(data["id"]).set_result(data)
                continue
            method, params = data.get("method"), data.get("params") or {}
            if method == "Runtime.consoleAPICalled":
                args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                self.console.append(f"{params.get('type')}: {args}")
            elif method == "Runtime.exceptionThrown":
                d = params.get("exceptionDetails") or {}
                self.exceptions.append(str((d.get("exception") or {}).get("description") or d.get("text")))
            elif method == "Log.entryAdded":
                e = params.get("entry") or {}
                self.console.append(f"{e.get('level')}: {e.get('text')} {e.get('url') or ''}")
            elif method == "Network.requestWillBeSent":
                self.requests.append(str((params.get("request") or {}).get("url")))

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        fut = asyncio.get_running_loop().create_future()
        self._waiting[self._id] = fut
        await self.ws.send_str(json.dumps({"id": self._id, "method": method, "params": params}))
        out = await asyncio.wait_for(fut, 30)
        if "error" in out:
            raise RuntimeError(f"{method}: {out['error']}")
        return out.get("result") or {}

    async def eval(self, expression: str) -> Any:
        out = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if out.get("exceptionDetails"):
            raise RuntimeError(f"{expression}: {out['exceptionDetails']}")
        return (out.get("result") or {}).get("value")

    async def wait_for(self, expression: str, timeout_s: float, what: str) -> Any:
        """Poll a JS expression until it is truthy; its value, or an AssertionError naming ``what``."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            value = await self.eval(expression)
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what} ({expression})")
            await asyncio.sleep(0.1)


class Browser:
    """``async with Browser(tmp) as b: page = await b.open(url)``."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.proc: subprocess.Popen | None = None
        self.session: aiohttp.ClientSession | None = None
        self.pages: list[Page] = []

    async def __aenter__(self) -> "Browser":
        self.proc = subprocess.Popen(
            [chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking", "--disable-sync", "--disable-component-update",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--user-data-dir={self.tmp / 'chromium-profile'}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace")
        loop = asyncio.get_running_loop()
        ws_url = await loop.run_in_executor(None, self._devtools_url)
        self.port = int(re.search(r":(\d+)/", ws_url).group(1))
        self.session = aiohttp.ClientSession()
        return self

    def _devtools_url(self) -> str:
        for line in self.proc.stderr:  # Chromium prints the DevTools endpoint once it listens
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                return m.group(1)
        raise AssertionError("Chromium exited without a DevTools endpoint")

    async def open(self, url: str) -> Page:
        async with self.session.put(f"http://127.0.0.1:{self.port}/json/new?about:blank") as r:
            target = await r.json(content_type=None)
        ws = await self.session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        page = Page(ws)
        for domain in ("Runtime", "Log", "Network", "Page"):
            await page.call(f"{domain}.enable")
        await page.call("Page.navigate", url=url)
        self.pages.append(page)
        return page

    async def __aexit__(self, *exc) -> None:
        for p in self.pages:
            p._reader.cancel()
            await p.ws.close()
        if self.session is not None:
            await self.session.close()
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
