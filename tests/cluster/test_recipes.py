"""The Kubernetes and Slurm recipes in ``deploy/`` run commands the real parser accepts.

Each recipe is parsed (YAML with PyYAML, the sbatch script line by line), each
``taskroll ...`` command in it is taken out and parsed by :func:`taskroll.cli.build_parser`,
so a misspelt sub-command or flag fails here; every ``TASKROLL_*`` variable a recipe
sets must be one taskroll reads.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskroll.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SOURCE = ROOT / "src" / "taskroll"


def containers(node: Any) -> Iterator[dict[str, Any]]:
    """Every container spec (a mapping under a ``containers`` list) in a YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from (item for item in value if isinstance(item, dict))
            else:
                yield from containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from containers(item)


def kubernetes_documents(name: str) -> list[dict[str, Any]]:
    with (DEPLOY / "kubernetes" / name).open() as file:
        return [document for document in yaml.safe_load_all(file) if document]


def container_command(container: dict[str, Any]) -> list[str]:
    """A container's ``command`` + ``args`` as strings (YAML numbers quoted or not)."""
    return [str(part) for part in [*container.get("command", []), *container.get("args", [])]]


def sbatch_commands(path: Path) -> list[list[str]]:
    """The ``taskroll ...`` commands of a batch script (``srun`` prefix and ``\\`` lines joined).

    Shell variables (``"${SLURM_CPUS_PER_TASK}"``) become ``1``, a value any numeric
    option takes.
    """
    text = path.read_text().replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        words = shlex.split(re.sub(r"\$\{?\w+\}?", "1", line))
        if "taskroll" in words:
            commands.append(words[words.index("taskroll"):])
    return commands


def parses(command: list[str]) -> Any:
    """Parse a ``taskroll`` command line with the real parser; fail the test if it refuses."""
    assert command[0] == "taskroll", command
    try:
        return build_parser().parse_args(command[1:])
    except SystemExit as error:
        pytest.fail(f"taskroll refuses {shlex.join(command)} (exit {error.code})")


def test_worker_job_drains_the_pool_with_completions_and_parallelism() -> None:
    (job,) = kubernetes_documents("job-workers.yaml")
    assert job["kind"] == "Job" and job["apiVersion"] == "batch/v1"
    spec = job["spec"]
    assert spec["completions"] >= 1 and spec["parallelism"] >= 1
    (container,) = containers(job)
    arguments = parses(container_command(container))
    assert arguments.command == "worker" and arguments.until_pool_done
    assert arguments.task_pool and not arguments.once and arguments.on is None


def test_online_cronjob_runs_the_routine_one_at_a_time() -> None:
    (cronjob,) = kubernetes_documents("cronjob-online.yaml")
    assert cronjob["kind"] == "CronJob" and cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert len(cronjob["spec"]["schedule"].split()) == 5
    (container,) = containers(cronjob)
    command = container_command(container)
    assert command[:3] == ["taskroll", "online", "routine"]
    arguments = parses(command)
    assert str(arguments.config).endswith(".yaml") and arguments.output


def test_slurm_array_runs_draining_workers() -> None:
    path = DEPLOY / "slurm" / "workers.sbatch"
    directives = [line.split(None, 1)[1] for line in path.read_text().splitlines()
                  if line.startswith("#SBATCH ")]
    assert any(re.fullmatch(r"--array=\d+-\d+(%\d+)?", directive) for directive in directives)
    commands = sbatch_commands(path)
    assert len(commands) == 1
    arguments = parses(commands[0])
    assert arguments.command == "worker" and arguments.until_pool_done and arguments.threads == 1


def test_every_recipe_variable_is_one_taskroll_reads() -> None:
    source = "\n".join(path.read_text() for path in SOURCE.rglob("*.py"))
    recipes = [path for path in DEPLOY.rglob("*") if path.is_file()]
    assert len(recipes) >= 3
    for recipe in recipes:
        for name in set(re.findall(r"TASKROLL_[A-Z_]+", recipe.read_text())):
            assert f'"{name}"' in source, f"{recipe.name}: taskroll does not read {name}"


def test_a_misspelt_flag_is_caught() -> None:
    # the check above would pass vacuously if the parser accepted anything
    with pytest.raises(pytest.fail.Exception):
        parses(["taskroll", "worker", "-t", "rolling", "--until-pool-dne"])
    with pytest.raises(pytest.fail.Exception):
        parses(["taskroll", "onlin", "routine"])
