#!/usr/bin/env python3
"""Loads a page in headless Chromium and prints its DOM, for tests.

    chromium-dom.py URL [--no-scripts] [--reads N] [--interval SECONDS]
                        [--screenshot FILE] [--size WxH]

Speaks the DevTools protocol over --remote-debugging-pipe (JSON messages
ended by NUL on fds 3 and 4), because `chromium --dump-dom` reads the DOM
by running script in the page and so prints nothing when scripts are off.
With --reads N the DOM is printed N times, --interval apart, from the same
page without reloading it (what a live page shows), separated by a line
"----- DOM -----". Standard library only.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time


class Browser:
    def __init__(self, size):
        self.profile = tempfile.mkdtemp(prefix="chromium-dom-")
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()
        # Chromium reads commands on fd 3 and writes answers on fd 4.
        def setup():
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)
        self.process = subprocess.Popen(
            ["chromium", "--headless", "--remote-debugging-pipe",
             # Root (the test suite) cannot use Chromium's sandbox; the page is ours.
             "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--hide-scrollbars", f"--window-size={size}", f"--user-data-dir={self.profile}"],
            preexec_fn=setup, pass_fds=(3, 4),  # the dup2 targets survive close_fds
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.next_id = 0
        self.buffer = b""
        self.events = []

    def send(self, method, params=None, session=None, timeout=30):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.time() + timeout
        while time.time() < deadline:
            reply = self.receive(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)
        raise TimeoutError(method)

    def receive(self, deadline):
        while b"\0" not in self.buffer:
            if time.time() > deadline:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self.from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def wait_event(self, method, timeout=30):
        deadline = time.time() + timeout
        while True:
            for event in self.events:
                if event.get("method") == method:
                    self.events.remove(event)
                    return event
            self.events.append(self.receive(deadline))

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--no-scripts", action="store_true")
    parser.add_argument("--reads", type=int, default=1)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--settle", type=float, default=1.5, help="seconds after load before the first read")
    parser.add_argument("--screenshot")
    parser.add_argument("--size", default="1280,420")
    args = parser.parse_args()

    browser = Browser(args.size)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        browser.send("Page.enable", session=session)
        browser.send("Emulation.setScriptExecutionDisabled", {"value": args.no_scripts}, session=session)
        browser.send("Page.navigate", {"url": args.url}, session=session)
        browser.wait_event("Page.loadEventFired")
        time.sleep(args.settle)
        for read in range(args.reads):
            if read:
                time.sleep(args.interval)
            root = browser.send("DOM.getDocument", {"depth": -1}, session=session)["root"]
            html = browser.send("DOM.getOuterHTML", {"nodeId": root["nodeId"]}, session=session)["outerHTML"]
            print("----- DOM -----")
            print(html, flush=True)
        if args.screenshot:
            import base64
            shot = browser.send("Page.captureScreenshot", {"format": "png"}, session=session)["data"]
            with open(args.screenshot, "wb") as f:
                f.write(base64.b64decode(shot))
    finally:
        browser.close()


if __name__ == "__main__":
    sys.exit(main())
