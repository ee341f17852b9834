"""The bids purge CronJob (deploy/k8s/base/bids-purge.yaml) agrees with the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from deploy_support import dockerfile_user, script_for

BASE = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "base"


def _cronjob() -> dict[str, Any]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert "bids-purge.yaml" in kustomization["resources"]
    (doc,) = list(yaml.safe_load_all((BASE / "bids-purge.yaml").read_text()))
    assert doc["kind"] == "CronJob"
    return dict(doc)


def test_the_cronjob_runs_the_purge_command_with_the_bids_settings() -> None:
    job = _cronjob()["spec"]
    # Runs never overlap (the advisory lock would make a second one skip anyway).
    assert job["concurrencyPolicy"] == "Forbid"
    pod = job["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    script = script_for(container["command"])
    assert (script.name, container["command"][1]) == ("bids-service", "purge")
    sources = [next(iter(s.values()))["name"] for s in container["envFrom"]]
    assert sources == ["bids-config", "bids-secrets"]
    assert pod["restartPolicy"] == "Never"


def test_the_purge_pod_is_hardened_like_the_services() -> None:
    pod = _cronjob()["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    uid, gid = dockerfile_user()
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"]) == (uid, gid)
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["limits"]["memory"]
