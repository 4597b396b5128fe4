"""deploy/Dockerfile, checked without a container engine: hadolint passes, and the image of
each service installs only that service's workspace packages (dependencies pinned by
requirements.lock), runs `python -m handoff_<service>` as a numeric non-root user, exposes the
port the service listens on, and checks /healthz with the standard library."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field

import pytest
from deploy_facts import DEPLOY, REPO, SERVICES, default_port, env_prefix

DOCKERFILE = DEPLOY / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [args for ins, args in self.instructions if ins == instruction]

    def one(self, instruction: str) -> str:
        found = self.all(instruction)
        assert len(found) == 1, f"stage {self.name}: {len(found)} {instruction} instructions"
        return found[0]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        result.append((keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return result


def parse() -> tuple[list[tuple[str, str]], list[Stage]]:
    """The instructions before the first FROM, and the stages."""
    preamble: list[tuple[str, str]] = []
    stages: list[Stage] = []
    for instruction, args in instructions(DOCKERFILE.read_text()):
        if instruction == "FROM":
            parts = args.split()
            parts = [p for p in parts if not p.startswith("--")]
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        elif stages:
            stages[-1].instructions.append((instruction, args))
        else:
            preamble.append((instruction, args))
    return preamble, stages


PREAMBLE, STAGES = parse()
BY_NAME = {s.name: s for s in STAGES if s.name}


def hadolint() -> str | None:
    local = REPO / ".venv" / "bin" / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


def test_hadolint_passes() -> None:
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (make install puts it in .venv/bin)")
    done = subprocess.run(
        [binary, "--no-color", "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings = json.loads(done.stdout or "[]")
    assert findings == []
    assert done.returncode == 0, done.stderr


def test_ignored_hadolint_rules_are_explained() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            reason = lines[number - 1]
            assert reason.startswith("#"), f"line {number + 1}: say why on the line above"
            assert "DL" in reason, f"line {number + 1}: name the rule in the reason"


def test_service_is_a_required_build_argument() -> None:
    assert ("ARG", "SERVICE") in PREAMBLE, "ARG SERVICE before the first FROM, with no default"
    final = STAGES[-1]
    assert final.base == "service-${SERVICE}"
    assert final.name is None


def test_uv_is_pinned() -> None:
    assert BY_NAME["uv"].base == "ghcr.io/astral-sh/uv:0.13.9"
    makefile = (REPO / "Makefile").read_text()
    assert "UV_VERSION := 0.13.9" in makefile, "the image's uv is the one make install uses"


def test_build_installs_only_the_services_closure_pinned_by_the_lock() -> None:
    build = BY_NAME["build"]
    assert "SERVICE" in build.all("ARG")
    (run,) = build.all("RUN")
    assert "--constraint requirements.lock" in run
    assert "./schemas ./runtime" in run
    for service in SERVICES:
        assert f"{service}|" in run or f"|{service}" in run, f"SERVICE={service} accepted"
    assert "exit 1" in run, "an unknown SERVICE fails the build"
    # The workspace packages a service depends on are exactly the two installed with it.
    for service in SERVICES:
        project = tomllib.loads((REPO / "services" / service / "pyproject.toml").read_text())
        workspace = {d for d in project["project"]["dependencies"] if d.startswith("handoff-")}
        assert workspace == {"handoff-runtime", "handoff-schemas"}


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_third_party_dependency_is_pinned_by_the_lock() -> None:
    pinned = {
        _requirement_name(line)
        for line in (REPO / "requirements.lock").read_text().splitlines()
        if line and not line.startswith((" ", "#"))
    }
    for package in ("schemas", "runtime", *(f"services/{s}" for s in SERVICES)):
        project = tomllib.loads((REPO / package / "pyproject.toml").read_text())
        for requirement in project["project"]["dependencies"]:
            name = _requirement_name(requirement)
            if not name.startswith("handoff-"):
                assert name in pinned, f"{package}: {name} is not in requirements.lock"


def test_final_image_has_only_the_virtualenv_and_a_numeric_user() -> None:
    base = BY_NAME["base"]
    assert base.base == "${PYTHON_IMAGE}"
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim") in PREAMBLE
    assert BY_NAME["build"].base == "${PYTHON_IMAGE}", "same interpreter as the virtualenv's"
    copies = base.all("COPY")
    assert copies == ["--from=build /opt/handoff /opt/handoff"]
    user = base.one("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), f"numeric user, not {user}"
    assert int(uid) != 0
    assert gid.isdigit(), f"numeric group, not {user}"
    for stage in STAGES:
        if stage.name != "build":
            for run in stage.all("RUN"):
                assert not re.search(r"apt-get|gcc|build-essential|pip install", run), run


@pytest.mark.parametrize("service", SERVICES)
def test_service_stage(service: str) -> None:
    stage = BY_NAME[f"service-{service}"]
    assert stage.base == "base", "every service stage builds on the shared base"
    assert json.loads(stage.one("ENTRYPOINT")) == ["python", "-m", f"handoff_{service}"]
    assert json.loads(stage.one("CMD")) == ["serve"]
    port = default_port(service)
    assert stage.one("EXPOSE") == str(port)
    env = stage.one("ENV")
    assert f"{env_prefix(service)}HOST=0.0.0.0".upper() in env.upper()

    healthcheck = stage.one("HEALTHCHECK")
    assert "CMD [" in healthcheck
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :])
    assert command[:2] == ["python", "-c"]
    script = command[2]
    compile(script, "healthcheck", "exec")
    assert "urllib.request" in script
    assert "/healthz" in script
    assert f"'{env_prefix(service).upper()}PORT', '{port}'" in script


def test_the_all_image_serves_nothing() -> None:
    stage = BY_NAME["service-all"]
    assert stage.all("ENTRYPOINT") == []
    assert stage.one("HEALTHCHECK") == "NONE"


def test_build_context_is_the_sources_only() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "everything is excluded unless listed"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert included == {"requirements.lock", "schemas", "runtime", "services"}
    copied = {args.split()[0].rstrip("/") for args in BY_NAME["build"].all("COPY")[1:]}
    assert copied <= included
