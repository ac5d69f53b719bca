"""Every schema/openapi document lints clean with @redocly/cli (tools/npm/redocly.yaml):
no errors and no warnings under the recommended ruleset."""
import json
import os
import subprocess

import pytest

import contract
from conftest import SRC

NPM_DIR = os.path.join(SRC, "tools", "npm")
REDOCLY = os.path.join(NPM_DIR, "node_modules", ".bin", "redocly")
CONFIG = os.path.join(NPM_DIR, "redocly.yaml")


def test_config_lints_every_document():
    with open(CONFIG) as f:
        text = f.read()
    for surface in contract.SURFACES:
        assert f"  {surface}:\n    root: ../../schema/openapi/{surface}.json\n" in text, surface


@pytest.mark.parametrize("surface", contract.SURFACES)
def test_openapi_lint(surface):
    assert os.access(REDOCLY, os.X_OK), f"{REDOCLY} is missing: run tools/npm-setup"
    env = dict(os.environ, REDOCLY_TELEMETRY="off", REDOCLY_SUPPRESS_UPDATE_NOTICE="true",
               NO_COLOR="1")
    r = subprocess.run([REDOCLY, "lint", surface, "--config", CONFIG, "--format", "json"],
                       cwd=NPM_DIR, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, f"redocly lint {surface} failed:\n{r.stdout}\n{r.stderr}"
    report = json.loads(r.stdout)
    problems = [f"{p['ruleId']}: {p['message']} at {p['location'][0]['pointer']}"
                for p in report["problems"]]
    assert report["totals"]["errors"] == 0 and report["totals"]["warnings"] == 0, problems
