"""The web chat page in a real browser: Debian's Chromium, headless, driven over the
Chrome DevTools Protocol on a pipe (--remote-debugging-pipe: JSON messages ended by
NUL on file descriptors 3 and 4; the standard library only). Asserts that a streamed
answer appears, that Stop ends a reply (and the server cancels it), and that a bad
request shows an error; saves a screenshot to target/server/chat.png.

    python browser.py BASE_URL MODEL
"""
import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request


class Browser:
    def __init__(self) -> None:
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if not exe:
            sys.exit("browser.py: chromium is not installed (apt-get install chromium)")
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()
        # Chromium reads commands on fd 3 and writes replies on fd 4: the child's ends are
        # moved out of the way first, then onto 3 and 4 in the child.
        child_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 100)
        child_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 100)

        def fds() -> None:
            os.dup2(child_r, 3)
            os.dup2(child_w, 4)

        self.profile = tempfile.mkdtemp(prefix="gomlx-chromium-")
        args = [exe, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-dev-shm-usage", "--disable-extensions", f"--user-data-dir={self.profile}", "--window-size=1200,800", "about:blank"]
        self.proc = subprocess.Popen(args, preexec_fn=fds, pass_fds=(3, 4, child_r, child_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in (child_r, child_w, to_chrome_r, from_chrome_w):
            os.close(fd)
        self.buf = b""
        self.next_id = 0
        self.session = None

    def _read(self) -> dict:
        while b"\0" not in self.buf:
            chunk = os.read(self.from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, session: bool = True) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        while True:
            r = self._read()
            if r.get("id") == self.next_id:
                if "error" in r:
                    raise RuntimeError(f"{method}: {r['error']}")
                return r.get("result", {})

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", {"url": url}, session=False)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)["sessionId"]
        self.call("Runtime.enable")

    def js(self, expr: str):
        r = self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expr: str, timeout: float, what: str):
        t = time.time()
        while time.time() - t < timeout:
            v = self.js(expr)
            if v:
                return v
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; page: {self.js('document.body.innerText')!r}")

    def close(self) -> None:
        try:
            self.call("Browser.close", session=False)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


def metric(base: str, name: str) -> float:
    for line in urllib.request.urlopen(f"{base}/metrics", timeout=30).read().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def ask(b: Browser, text: str) -> None:
    b.js(f"document.getElementById('input').value = {json.dumps(text)}; document.getElementById('form').requestSubmit(); true")


def main() -> None:
    base, model = sys.argv[1], sys.argv[2]
    shot = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "target", "server", "chat.png")
    os.makedirs(os.path.dirname(shot), exist_ok=True)
    b = Browser()
    try:
        b.open(base + "/")
        b.wait(f"[...document.querySelectorAll('#model option')].some(o => o.value === {json.dumps(model)})", 30, "the model picker")
        b.js(f"document.getElementById('model').value = {json.dumps(model)}; document.getElementById('temperature').value = '0';"
             "document.getElementById('max_tokens').value = '24'; true")

        # 1. A streamed answer appears, rendered, with its speed.
        ask(b, "What is the capital of France?")
        b.wait("document.querySelector('.msg.assistant.done') !== null", 120, "the first reply")
        answer = b.js("document.querySelector('.msg.assistant .body').innerText")
        meta = b.js("document.querySelector('.msg.assistant .meta').innerText")
        assert "Paris" in answer, answer
        assert "tok/s" in meta, meta
        # The conversation is kept in the browser.
        kept = json.loads(b.js("localStorage.getItem('gomlx.chat')"))
        assert [m["role"] for m in kept] == ["user", "assistant"] and "Paris" in kept[1]["content"], kept

        # 2. Stop ends a long reply, and the server cancels its generation.
        cancelled = metric(base, "gomlx_cancelled_total")
        b.js("document.getElementById('max_tokens').value = '400'; true")
        ask(b, "Count from one to two hundred, one number per line.")
        b.wait("(() => { const m = document.querySelectorAll('.msg.assistant'); return m.length === 2 && m[1].querySelector('.body').innerText.length > 5; })()",
               120, "the second reply to start")
        b.js("document.getElementById('stop').click(); true")
        b.wait("document.querySelectorAll('.msg.assistant.stopped').length === 1", 10, "the reply to stop")
        assert "stopped" in b.js("document.querySelectorAll('.msg.assistant')[1].querySelector('.meta').innerText")
        t = time.time()
        while metric(base, "gomlx_cancelled_total") <= cancelled:
            assert time.time() - t < 20, "the server did not cancel the stopped reply"
            time.sleep(0.1)
        assert b.js("document.getElementById('send').disabled") is False

        # 3. A bad request (temperature 5) shows the server's error, naming the field.
        b.js("document.getElementById('temperature').value = '5'; document.getElementById('max_tokens').value = '24'; true")
        ask(b, "Hello")
        err = b.wait("(document.querySelector('.msg.error') || {}).innerText", 30, "the error")
        assert "temperature" in err, err

        # Markdown is rendered and HTML in a reply is shown as text, not run.
        html = b.js("markdown('**bold** <img src=x onerror=alert(1)> `code` [a](javascript:alert(1))')")
        assert "<strong>bold</strong>" in html and "&lt;img" in html and "<code>code</code>" in html and "href" not in html, html

        data = b.call("Page.captureScreenshot", {"format": "png"})["data"]
        with open(shot, "wb") as f:
            f.write(base64.b64decode(data))
        print(f"browser: streamed answer {answer.strip()!r} ({meta}); stop cancelled the reply; error shown: {err.strip()!r}; screenshot {os.path.normpath(shot)}")
    finally:
        b.close()


if __name__ == "__main__":
    main()
