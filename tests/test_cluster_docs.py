"""docs/cluster.md says only what is there: every repository path it names exists, every job in
jobs/ has a `ray job submit` command, and each command's config loads with its overrides (the
keys exist, the values validate) and is a config of that job."""

import re
import shlex
from pathlib import Path

import pytest

from crome_ray.config import ConfigError
from crome_ray.job_configs import load_job_config

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "cluster.md"
ROOT = "gs://crome-ray-docs-test/runs"  # what the guide's $ROOT stands for here
JOBS = sorted(p.stem for p in (REPO / "jobs").glob("*.py"))


def repo_paths(text: str) -> set[str]:
    """Paths under cluster/, infra/, jobs/, docs/, tests/, tools/ (placeholders like <job> cut them short)."""
    found = re.findall(r"(?<![\w./-])((?:cluster|infra|jobs|docs|tests|tools)/[\w./*-]*)", text)
    return {p.rstrip("./") for p in found}


def submit_commands(text: str) -> list[list[str]]:
    """The argv after `--` of each `ray job submit` in the guide's code blocks, $ROOT filled in."""
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [
        shlex.split(line.replace("$ROOT", ROOT).split(" -- ", 1)[1])
        for line in lines
        if line.startswith("ray job submit")
    ]


def job_and_overrides(argv: list[str]) -> tuple[str, str, list[str]]:
    """("train", "jobs/configs/train_crome.yaml", [overrides]) from a command's argv."""
    assert argv[:2] == ["python", f"jobs/{Path(argv[1]).name}"] and argv[2] == "--config"
    overrides = [a for a in argv[4:] if "=" in a and not a.startswith("-")]
    return Path(argv[1]).stem, argv[3], overrides


def test_every_path_the_guide_names_exists():
    paths = repo_paths(GUIDE.read_text())
    assert {"cluster/gcp.yaml", "cluster/kuberay/rayjob.yaml", "infra/gcp", "infra/Dockerfile.cpu"} <= paths
    missing = sorted(p for p in paths if not any(REPO.glob(p)))
    assert missing == []


def test_the_path_check_finds_a_missing_file():
    assert repo_paths("see `cluster/azure.yaml` and jobs/configs/<job>.yaml") == {
        "cluster/azure.yaml",
        "jobs/configs",
    }
    assert not (REPO / "cluster" / "azure.yaml").exists()


def test_every_job_has_a_submit_command_with_its_own_shipped_config():
    commands = submit_commands(GUIDE.read_text())
    submitted = {job_and_overrides(argv)[0] for argv in commands}
    assert submitted == set(JOBS)
    for argv in commands:
        job, config, _ = job_and_overrides(argv)
        assert (REPO / argv[1]).is_file() and (REPO / config).is_file()
        head = (REPO / config).read_text()
        assert re.search(rf"^job: {job}$", head, re.M), f"{config} is not a {job} config"


@pytest.mark.parametrize("argv", submit_commands(GUIDE.read_text()), ids=lambda a: Path(a[3]).stem)
def test_each_submit_command_loads_its_config_with_its_overrides(argv):
    """The overrides name real keys with valid values, and every run goes to the guide's root."""
    _, config, overrides = job_and_overrides(argv)
    cfg = load_job_config(REPO / config, overrides)
    assert cfg.storage.root == ROOT
    reads = [o.split("=", 1)[1] for o in overrides if not o.startswith("storage.")]
    assert all(ROOT in r for r in reads if "://" in r)  # inputs read from the same bucket


def test_a_command_with_a_misspelt_override_fails_to_load():
    with pytest.raises(ConfigError):
        load_job_config(
            REPO / "jobs" / "configs" / "train_crome.yaml", [f"storage.root={ROOT}", "train_dta=x"]
        )
