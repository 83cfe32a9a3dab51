"""The README's examples run as written, against the README's own first command (`serve --simulate`).

Every fenced `sh` and `python` block of README.md is a case, named by its line. An HTML comment
on the line before a block says how it runs (`<!-- readme-test: KIND -->`, invisible on GitHub):

- no comment: run to its end, exit 0 (`python` blocks with the venv's python);
- `server`: the first command; its `lmstudio-proxy serve --simulate` is what the others talk to;
- `terminal 1` / `terminal 2`: the curl stream and the cancel of it, run side by side;
- `background`: a long-running command: started, seen listening, stopped with Ctrl-C (SIGINT);
- `lmstudio`: needs a real LM Studio, so it is skipped (its command lines are still parsed);
- `skip (why)`: not run, for the reason given.

"As written" except for where things go: the proxy listens on a free port (LMSTUDIO_PROXY_CONFIG
names a config with it) and the examples' `127.0.0.1:8000` becomes that address; `--port 41343`
becomes a free port; `.venv/bin/` is the venv running the tests; XDG_DATA_HOME is a temp folder.
Whether the examples' imports are installed by the README's own commands (and the notebook's by
its own) is checked against the installed packages' metadata, as a fresh clone would have them.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement

from proxy.cli import _parser

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"
BIN = Path(sys.executable).parent
TIMEOUT = 60
FIRST_COMMAND = ["python3 -m venv .venv", ".venv/bin/pip install -e ."]
KINDS = {"", "server", "terminal 1", "terminal 2", "background", "lmstudio", "skip"}


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence
    lang: str
    text: str
    kind: str
    reason: str = ""

    @property
    def id(self) -> str:
        return f"README.md:{self.line}" + (f"-{self.kind.replace(' ', '')}" if self.kind else "")


_MARKER = re.compile(r"<!-- readme-test: ([a-z0-9 ]+?)(?: \((.+)\))? -->")


def fenced_blocks(text: str) -> Iterator[tuple[int, str, str, str]]:
    """(line of the fence, language, code, the line before the fence) of every fenced block."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("```"):
            start, lang = i, lines[i][3:].strip()
            i += 1
            while not lines[i].startswith("```"):
                i += 1
            yield start + 1, lang, "\n".join(lines[start + 1 : i]) + "\n", lines[start - 1] if start else ""
        i += 1


def readme_blocks() -> list[Block]:
    blocks = []
    for line, lang, code, before in fenced_blocks(README.read_text(encoding="utf-8")):
        assert lang in ("sh", "python"), f"README.md:{line}: a ```{lang} block; the test runs sh and python"
        marker = _MARKER.fullmatch(before.strip())
        kind, reason = (marker.group(1), marker.group(2) or "") if marker else ("", "")
        blocks.append(Block(line, lang, code, kind, reason))
    return blocks


BLOCKS = readme_blocks()


def test_every_block_says_how_it_runs() -> None:
    assert all(b.kind in KINDS for b in BLOCKS), [(b.id, b.kind) for b in BLOCKS if b.kind not in KINDS]
    assert BLOCKS[0].kind == "server" and [b.kind for b in BLOCKS].count("server") == 1
    assert all(b.reason for b in BLOCKS if b.kind == "skip")
    kinds = [b.kind for b in BLOCKS]
    assert kinds.count("terminal 1") == kinds.count("terminal 2") == 1
    assert kinds.index("terminal 2") == kinds.index("terminal 1") + 1


# -- what the examples import is what the README installs ------------------------------------


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(names: set[str], with_extras: dict[str, set[str]] | None = None) -> set[str]:
    """`names` and everything they require (with their extras), as installed here."""
    extras = dict(with_extras or {})
    seen: set[str] = set()
    todo = [_normal(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue  # named but not installed here (e.g. jupyterlab): it still counts as installed
        for text in requires:
            req = Requirement(text)
            wanted = {"", *extras.get(name, set())}
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in wanted):
                extras.setdefault(_normal(req.name), set()).update(req.extras)
                todo.append(_normal(req.name))
    return seen


def commands(code: str) -> Iterator[list[str]]:
    """The words of each command of a shell block (split at `&&` and line ends, `\\` joined)."""
    for command in re.split(r"&&|\n", code.replace("\\\n", " ")):
        if words := shlex.split(command, comments=True):
            yield words


def pip_installs(code: str) -> set[str]:
    """The distributions `pip install` lines of a shell block name (`-e .` and `-e '.[extra]'` are lmstudio-proxy)."""
    names: set[str] = set()
    for words in commands(code):
        if len(words) > 2 and words[0].endswith("pip") and words[1] == "install":
            for word in words[2:]:
                if word == "." or word.startswith(".["):
                    names.add("lmstudio-proxy")
                elif not word.startswith("-"):
                    names.add(Requirement(word).name)
    return names


def imports(code: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names)


def missing_imports(code: str, installed: set[str]) -> set[str]:
    providers = metadata.packages_distributions()
    available = _closure(installed)
    return {
        module
        for module in imports(code)
        if not {_normal(d) for d in providers.get(module, [])} & available
        and not (module == "proxy" and "lmstudio-proxy" in available)
    }


def test_readme_python_examples_import_only_what_the_readme_installs() -> None:
    installed: set[str] = set()
    checked = 0
    for block in BLOCKS:
        if block.lang == "sh":
            installed |= pip_installs(block.text)
        else:
            assert not missing_imports(block.text, installed), f"{block.id} imports what the README did not install"
            checked += 1
    assert checked >= 2 and "aitronos-sdk" in installed


def test_notebook_imports_only_what_it_says_to_install() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    setup = "".join(c.source for c in nb.cells if c.cell_type == "markdown")
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    options = [pip_installs(code) for _, lang, code, _ in fenced_blocks(setup) if lang == "sh"]
    assert len(options) == 2  # with Jupyter in a browser, and without
    for installed in options:
        assert {"aitronos-sdk"} <= installed
        assert not missing_imports(code, {"lmstudio-proxy", *installed})  # on top of the README's first command


def test_missing_imports_sees_a_missing_sdk() -> None:
    # The README's original mistake: the aitronos SDK, used but installed by nothing it says.
    assert missing_imports("import json\nimport proxy\nfrom aitronos import Aitronos\n", {"lmstudio-proxy"}) == {
        "aitronos"
    }


# -- the command lines are ones the CLI takes --------------------------------------------------


def test_command_lines_parse_and_name_files_that_exist() -> None:
    parsed = 0
    for block in (b for b in BLOCKS if b.lang == "sh"):
        created: set[str] = set()
        for words in commands(block.text):
            command = shlex.join(words)
            if words[:1] == ["cp"]:
                assert (ROOT / words[1]).is_file(), f"{block.id}: {command}"
                created.add(words[2])
            if words[:1] != [".venv/bin/lmstudio-proxy"]:
                continue
            args: argparse.Namespace = _parser(words[1:]).parse_args(words[1:])
            if getattr(args, "config", None):
                assert args.config in created or (ROOT / args.config).is_file(), f"{block.id}: {command}"
            parsed += 1
    assert parsed >= 8


# -- running the examples ----------------------------------------------------------------------


class Process:
    """A command in the background; its output lines arrive on a queue as it writes them."""

    def __init__(
        self, command: list[str], env: dict[str, str], cwd: Path = ROOT, stderr: int = subprocess.STDOUT
    ) -> None:
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, cwd=cwd)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, found: Callable[[str], bool]) -> str:
        """The first output line (from here on) for which `found` is true."""
        while True:
            line = self.lines.get(timeout=TIMEOUT)
            assert line is not None, f"exited ({self.proc.wait()}) before the line waited for: {self.output}"
            self.output.append(line)
            if found(line):
                return line

    def finish(self, signum: int | None = None) -> int:
        if signum is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)
        code = self.proc.wait(TIMEOUT)
        self._reader.join(TIMEOUT)
        while (line := self.lines.get_nowait()) is not None:
            self.output.append(line)
        return code


@dataclass
class Server:
    address: str  # 127.0.0.1:PORT, where the examples' 127.0.0.1:8000 goes
    env: dict[str, str]
    free_port: Callable[[], int]

    def as_run(self, text: str) -> str:
        text = text.replace("127.0.0.1:8000", self.address).replace(".venv/bin/", f"{BIN}/")
        return text.replace("--port 41343", f"--port {self.free_port()}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("readme")
    port = _free_port()
    config = tmp / "config.toml"
    config.write_text(f"[server]\nport = {port}\n", encoding="utf-8")
    env = {
        **os.environ,
        "LMSTUDIO_PROXY_CONFIG": str(config),
        "XDG_DATA_HOME": str(tmp / "data"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    parts = BLOCKS[0].text.strip().split(" && ")
    assert parts[:2] == FIRST_COMMAND, "the test knows what the first command installs: update it"
    ready = Server(f"127.0.0.1:{port}", env, _free_port)
    proc = Process(shlex.split(ready.as_run(parts[2])), env)
    try:
        proc.wait_for(lambda line: "lmstudio-proxy listening on" in line)
        database = proc.wait_for(lambda line: "database:" in line)
        assert str(tmp / "data") in database  # not the user's data directory
        yield ready
    finally:
        code = proc.finish(signal.SIGTERM)
    assert code == 0, "".join(proc.output)


RUNNABLE = [b for b in BLOCKS if b.kind not in ("server", "terminal 2")]


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_example(block: Block, server: Server, tmp_path: Path) -> None:
    if block.kind == "lmstudio":
        pytest.skip(
            "needs a real LM Studio (test_command_lines_parse_and_name_files_that_exist still parses its commands)"
        )
    if block.kind == "skip":
        pytest.skip(block.reason)
    if re.match(r"curl\b", block.text) and shutil.which("curl") is None:
        pytest.skip("curl is not installed (scripts/test.sh installs it with apt-get when it can)")
    if block.kind == "terminal 1":
        stream_and_cancel(block, BLOCKS[BLOCKS.index(block) + 1], server)
    elif block.kind == "background":
        proc = Process(["bash", "-c", "exec " + server.as_run(block.text).strip()], server.env)
        proc.wait_for(lambda line: "listening on" in line)
        # Ctrl-C, as in the terminal it was typed in: KeyboardInterrupt exits 130, and no traceback.
        assert proc.finish(signal.SIGINT) in (0, 130), "".join(proc.output)
        assert "Traceback" not in "".join(proc.output)
    else:
        command = [sys.executable, "-c"] if block.lang == "python" else ["bash", "-e", "-c"]
        done = subprocess.run(
            [*command, server.as_run(block.text)],
            capture_output=True,
            text=True,
            env=server.env,
            cwd=tmp_path if block.lang == "python" else ROOT,
            timeout=TIMEOUT * 2,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.strip(), done.stderr  # every example prints something


def stream_and_cancel(terminal_1: Block, terminal_2: Block, server: Server) -> None:
    """Terminal 1 streams; once its first event (with the thread id) is in, terminal 2 cancels."""
    assert terminal_2.kind == "terminal 2" and "THREAD_ID" in terminal_2.text
    # stdout only: curl draws its progress meter on stderr with carriage returns, and on a busy
    # machine it lands inside a `data:` line (a flaky failure in CI before this).
    stream = Process(["bash", "-c", server.as_run(terminal_1.text)], server.env, stderr=subprocess.DEVNULL)
    try:
        first = stream.wait_for(lambda line: line.startswith("data: {"))
        thread_id = json.loads(first[len("data: ") :])["thread_id"]
        stream.wait_for(lambda line: "response.content_delta" in line)  # it is generating
        command = server.as_run(terminal_2.text).replace("THREAD_ID", thread_id)
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=server.env, timeout=TIMEOUT)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["cancel_mode"] in ("quick_edit", "keep_partial"), done.stdout
    finally:
        code = stream.finish()
    assert code == 0, "".join(stream.output)
    events = [line.strip() for line in stream.output if line.startswith("data:")]
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][len("data: ") :])["event"] == "response.cancelled"
