"""Executable documentation: the command blocks of README.md and docs/*.md, run as written.

Every ```sh block of README.md, then of docs/*.md (in name order), runs in document order in
one fresh directory, as in a reader's shell: what a block exports, the directory it ends in
and an activated venv carry over to the next block. The directory holds what the blocks use
of a clone (examples/, .env.example, the Makefile with pyproject.toml and kafka/pom.xml)
and links to the venv and to the broker's jars, which make finds up to date. The venv's
``bin`` is *not* on PATH: a block that calls `tickstream` works only if the docs activated
the venv before it.

Conventions in the Markdown:

* ``<!-- docs-test: skip (why) -->`` just before a block: not run (needs Docker, or is the
  test suite itself).
* ``<!-- docs-test: timeout N (why) -->`` just before a block: it runs until Ctrl-C; it must
  not fail within N seconds, then it gets Ctrl-C (SIGINT to its process group) and must stop.
* ``# prints TEXT`` at the end of a command: its standard output is TEXT.
* A fence without a language right after a block of commands: the standard output of the
  block's last command (compared line by line, trailing blanks ignored).
* ```sql blocks of README.md run through `tickstream query` on standard input and are
  checked the same way. Those of docs/queries.md are not run here:
  test_schema_queries.py runs every one of them against known rows.

The environment is a reader's but for: the test broker (TICKSTREAM_KAFKA_BOOTSTRAP), a
temporary chDB directory (TICKSTREAM_CLICKHOUSE_URL), no metrics endpoints
(TICKSTREAM_METRICS_PORT=0) and, for the blocks run with a timeout, a free gateway port
(TICKSTREAM_GATEWAY_PORT), so that nothing collides with other tests or a running pipeline.
The Kafka namespaces the blocks use (the default one and every ``--namespace``) start empty.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_SQL_OF = {ROOT / "README.md"}  # docs/queries.md's SQL: test_schema_queries.py

BLOCK_LIMIT_S = 150  # a block without a timeout marker that runs longer is a finding
STOP_GRACE_S = 60  # after Ctrl-C

_FENCE = re.compile(r"^```\s*([\w-]*)\s*$")
_MARKER = re.compile(r"^<!--\s*docs-test:\s*(skip|timeout\s+(\d+))\b.*-->\s*$")
_PRINTS = re.compile(r"\s#\s*prints\s+(.*?)\s*$")
_HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")
_NAMESPACE = re.compile(r"--namespace[= ]+([\w.-]+)")


@dataclass
class Block:
    where: str  # file:line of the opening fence
    lang: str
    text: str
    skip: bool = False
    timeout_s: int | None = None
    output: list[str] | None = None  # the output block right after it


@dataclass
class Shell:
    """A reader's shell, carried from block to block."""

    cwd: Path
    env: dict[str, str]
    extra: dict[str, str] = field(default_factory=dict)  # for timeout blocks only


def parse(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    marker: re.Match[str] | None = None
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence is None:
            if line.strip():
                marker = _MARKER.match(line.strip())
            i += 1
            continue
        lang, start = fence.group(1), i
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        block = Block(f"{path.relative_to(ROOT)}:{start + 1}", lang, "\n".join(lines[i + 1 : end]))
        if marker is not None:
            block.skip = marker.group(1) == "skip"
            block.timeout_s = int(marker.group(2)) if marker.group(2) else None
        marker = None
        i = end + 1
        if lang in ("sh", "sql"):
            j = i
            while j < len(lines) and not lines[j].strip():
                j += 1
            after = _FENCE.match(lines[j]) if j < len(lines) else None
            if after is not None and not after.group(1):
                out_end = next(k for k in range(j + 1, len(lines)) if lines[k].startswith("```"))
                block.output = lines[j + 1 : out_end]
                i = out_end + 1
        blocks.append(block)
    return blocks


def commands(text: str) -> list[str]:
    """The block's commands: continuation lines, multi-line quotes and here-documents joined."""
    found: list[str] = []
    current: list[str] = []
    heredoc: str | None = None
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current.append(line)
        if heredoc is not None:
            if line.strip() == heredoc:
                heredoc = None
                found.append("\n".join(current))
                current = []
            continue
        opened = _HEREDOC.search(line)
        if opened is not None:
            heredoc = opened.group(2)
            continue
        joined = "\n".join(current)
        if not joined.endswith("\\") and _complete(joined):
            found.append(joined)
            current = []
    assert not current, f"an unfinished command: {current}"
    return found


def _complete(text: str) -> bool:
    try:
        shlex.split(text, comments=True)
    except ValueError:  # an open quote
        return False
    check = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True)
    return check.returncode == 0


def expected_lines(text: str | list[str]) -> list[str]:
    lines = [line.rstrip() for line in (text.splitlines() if isinstance(text, str) else text)]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def script(cmds: list[str], out: Path, keep_state: bool) -> str:
    """One bash script: each command's output to its own files, the shell's state at the end."""
    parts = ["set -o pipefail"]
    for n, cmd in enumerate(cmds):
        parts.append(
            f"{{\n{cmd}\n}} >{shlex.quote(str(out / f'{n}.out'))} "
            f"2>{shlex.quote(str(out / f'{n}.err'))}\n"
            f"rc=$?; if [ $rc -ne 0 ]; then echo {n} > {shlex.quote(str(out / 'failed'))}; "
            "exit $rc; fi"
        )
    if keep_state:
        parts.append(f"env -0 > {shlex.quote(str(out / 'env'))}")
        parts.append(f"pwd > {shlex.quote(str(out / 'pwd'))}")
    return "\n".join(parts) + "\n"


def run_block(block: Block, cmds: list[str], shell: Shell, out: Path) -> None:
    out.mkdir(parents=True)
    env = {**shell.env, **(shell.extra if block.timeout_s else {})}
    proc = subprocess.Popen(
        ["bash", "-c", script(cmds, out, keep_state=not block.timeout_s)],
        cwd=shell.cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=(out / "script.out").open("wb"),
        stderr=(out / "script.err").open("wb"),
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    limit = block.timeout_s or BLOCK_LIMIT_S
    try:
        rc = proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        if not block.timeout_s:
            _stop(proc)
            pytest.fail(
                f"{block.where}: still running after {limit} s ({_report(cmds, out)}); "
                "a command that runs until Ctrl-C needs a <!-- docs-test: timeout N --> marker"
            )
        _stop(proc)
        crashed = [n for n in range(len(cmds)) if "Traceback" in _text(out / f"{n}.err")]
        assert not crashed, f"{block.where}: a traceback\n{_report(cmds, out, crashed[0])}"
        return
    if rc != 0:
        failed = int((out / "failed").read_text()) if (out / "failed").exists() else -1
        pytest.fail(
            f"{block.where}: exit code {rc} from\n  {cmds[failed] if failed >= 0 else cmds}\n"
            f"{_report(cmds, out, failed)}"
        )
    if not block.timeout_s:
        values = (out / "env").read_bytes().split(b"\0")
        shell.env = dict(v.decode().split("=", 1) for v in values if b"=" in v)
        shell.cwd = Path((out / "pwd").read_text().strip())


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C to the whole process group, as a terminal sends it; it must then stop."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"did not stop within {STOP_GRACE_S} s of Ctrl-C")


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _report(cmds: list[str], out: Path, failed: int | None = None) -> str:
    shown = [failed] if failed is not None and failed >= 0 else range(len(cmds))
    text = []
    for n in shown:
        for stream in ("out", "err"):
            path = out / f"{n}.{stream}"
            if path.exists() and path.stat().st_size:
                tail = path.read_text(errors="replace")[-3000:]
                text.append(f"--- std{stream} of command {n + 1}:\n{tail}")
    return "\n".join(text) or "(no output)"


def check_outputs(block: Block, cmds: list[str], out: Path) -> None:
    for n, cmd in enumerate(cmds):
        printed = (out / f"{n}.out").read_text()
        shown = _PRINTS.search(cmd.splitlines()[-1])
        if shown is not None:
            assert expected_lines(printed) == [shown.group(1)], (
                f"{block.where}: `{cmd}` printed {printed!r}, the document says {shown.group(1)!r}"
            )
    if block.output is not None:
        printed = (out / f"{len(cmds) - 1}.out").read_text()
        assert expected_lines(printed) == expected_lines(block.output), (
            f"{block.where}: `{cmds[-1]}` printed\n{printed}\nthe document shows\n"
            + "\n".join(block.output)
        )


# ------------------------------------------------------------------ the reader's directory


def reader_directory(path: Path) -> None:
    """What a clone holds that the blocks use; make finds the venv and the jars up to date."""
    path.mkdir()
    shutil.copytree(ROOT / "examples", path / "examples")
    for name in ("Makefile", "pyproject.toml", ".env.example", "kafka/pom.xml"):
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, path / name)
    for prerequisite in ("pyproject.toml", "kafka/pom.xml"):  # older than what make built
        os.utime(path / prerequisite, (0, 0))
    (path / ".venv").symlink_to(Path(sys.prefix))
    (path / ".cache").symlink_to(ROOT / ".cache")
    stale = subprocess.run(
        ["make", "-q", ".venv/.installed", ".cache/kafka/libs/.fetched"], cwd=path
    )
    if stale.returncode != 0:  # make would (re)install into the real venv from here: no
        pytest.skip("the venv or the broker's jars are not make's: run `make setup` first")


def reader_env(kafka_bootstrap: str, chdb: Path) -> dict[str, str]:
    venv_bin = str(Path(sys.prefix) / "bin")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TICKSTREAM_", "MAKE", "PYTEST_"))
        and k not in ("MFLAGS", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    }
    path = [p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p != venv_bin]
    env["PATH"] = os.pathsep.join(path)
    env.update(
        TICKSTREAM_KAFKA_BOOTSTRAP=kafka_bootstrap,
        TICKSTREAM_CLICKHOUSE_URL=f"chdb://{chdb}",
        TICKSTREAM_METRICS_PORT="0",
    )
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def empty_namespaces(bootstrap: str, namespaces: set[str]) -> None:
    """Delete the namespaces' topics (a reused test broker may hold an earlier run's)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:

        def ours(topics: list[str]) -> list[str]:
            return [t for t in topics if t.split(".", 1)[0] in namespaces]

        doomed = ours(await admin.list_topics())
        if doomed:
            await admin.delete_topics(doomed)
        deadline = time.monotonic() + 30
        while ours(await admin.list_topics()):
            assert time.monotonic() < deadline, "the namespaces' topics were not deleted"
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


# ------------------------------------------------------------------ the test


def test_parsing_follows_the_conventions() -> None:
    blocks = [b for doc in DOCUMENTS for b in parse(doc)]
    readme = parse(ROOT / "README.md")
    assert any(b.output for b in readme), "the worked example's output block"
    assert any(b.timeout_s for b in readme) and any(b.skip for b in readme)
    assert commands("a \\\n  b\nc 'x\ny'  # prints 1\ncat <<'E'\nq\nE\n") == [
        "a \\\n  b",
        "c 'x\ny'  # prints 1",
        "cat <<'E'\nq\nE",
    ]
    assert not [b.where for b in blocks if b.lang == "sh" and not b.text.strip()]


def test_every_documented_command_runs_as_written(kafka_bootstrap: str, tmp_path: Path) -> None:
    started = time.monotonic()
    reader = tmp_path / "reader"
    reader_directory(reader)
    shell = Shell(cwd=reader, env=reader_env(kafka_bootstrap, tmp_path / "chdb"))
    shell.extra = {"TICKSTREAM_GATEWAY_PORT": str(free_port())}
    plan = [(doc, b) for doc in DOCUMENTS for b in parse(doc)]
    namespaces = {"tickstream"} | {
        ns for _, b in plan if b.lang == "sh" for ns in _NAMESPACE.findall(b.text)
    }
    asyncio.run(empty_namespaces(kafka_bootstrap, namespaces))
    ran: list[str] = []
    for n, (doc, block) in enumerate(plan):
        if block.skip or block.lang not in ("sh", "sql"):
            continue
        if block.lang == "sql":
            if doc not in RUN_SQL_OF:
                continue
            cmds = [f"tickstream query <<'SQL'\n{block.text}\nSQL"]
        else:
            cmds = commands(block.text)
        run_block(block, cmds, shell, tmp_path / f"block-{n}")
        if not block.timeout_s:
            check_outputs(block, cmds, tmp_path / f"block-{n}")
        ran.append(f"{block.where} ({time.monotonic() - started:.0f} s)")
    print("ran:", *ran, sep="\n  ")
    assert ran, "no block ran"
