"""The locks say what pyproject.toml asks for: requirements.txt pins every package a deploy
installs, then the project (`.`) last; requirements-dev.txt holds the same pins plus the
extras'. Refreshed by `./run lock` (.ci/lock); these tests catch a pyproject.toml edited
without it."""

from __future__ import annotations

import tomllib

from packaging.requirements import Requirement

from tests.prod_venv import lock_pins, normalise
from tests.support import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
DEV_LOCK = REPO / "requirements-dev.txt"


def requirement_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.lstrip().startswith("#")]


def test_requirements_txt_is_pins_then_the_project():
    lines = requirement_lines((REPO / "requirements.txt").read_text())
    assert lines[-1] == "."
    for line in lines[:-1]:
        name, _, version = line.partition("==")
        assert name and version and " " not in line and "[" not in name, line


def test_the_dev_lock_holds_the_deploy_pins():
    deploy = lock_pins()
    dev = lock_pins(DEV_LOCK)
    assert {name: dev.get(name) for name in deploy} == deploy
    assert "." not in requirement_lines(DEV_LOCK.read_text())


def test_every_declared_dependency_is_pinned_within_its_range():
    deploy, dev = lock_pins(), lock_pins(DEV_LOCK)
    extras = PYPROJECT["optional-dependencies"]
    for lock, declared in ((deploy, PYPROJECT["dependencies"]),
                           (dev, [*extras["test"], *extras["bench"]])):
        for line in declared:
            requirement = Requirement(line)
            version = lock.get(normalise(requirement.name))
            assert version is not None, f"{requirement.name} is not pinned"
            assert requirement.specifier.contains(version, prereleases=True), (line, version)


def test_gunicorns_gevent_extra_is_what_the_web_process_needs():
    """gunicorn's gevent worker imports `packaging`, which only its `gevent` extra brings."""
    gunicorn = next(Requirement(line) for line in PYPROJECT["dependencies"]
                    if Requirement(line).name == "gunicorn")
    assert "gevent" in gunicorn.extras
    assert {"gevent", "packaging", "greenlet"} <= set(lock_pins())
