"""The photographs for a fresh clone: the configured DVC remote first, else say what to run.

`scripts/setup.sh` runs it last. Outcomes, each printed in words:
- CI=true or SKIP_DVC_PULL=1: skipped (the tests use tests/data), exit 0;
- no default remote, or a local-folder remote that is not on this machine (the team's
  ../shared/dvc-store seen from a GitHub clone): the command that fetches the public
  photos instead, exit 0 (nothing was tried, nothing failed);
- an S3 remote and no AWS credentials anywhere DVC would look: says so, exit 1;
- otherwise `dvc pull data/raw.dvc`; if that fails, why (DVC's output) and both ways on,
  exit 1. It never fails silently.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from dvc.repo import Repo

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_COMMAND = "python -m stages.public_data"
TARGET = "data/raw.dvc"


@dataclass(frozen=True)
class Remote:
    """The default DVC remote as DVC resolves it (local paths made absolute)."""

    name: str
    url: str
    settings: dict

    @property
    def is_local(self) -> bool:
        return "://" not in self.url


def default_remote(root: Path) -> Remote | None:
    config = Repo(str(root)).config
    name = config["core"].get("remote")
    if not name or name not in config["remote"]:
        return None
    settings = dict(config["remote"][name])
    return Remote(name, str(settings.get("url", "")), settings)


def has_aws_credentials(remote: Remote) -> bool:
    """Whether DVC's S3 client would find credentials: the remote's own keys or profile,
    else botocore's chain (environment, ~/.aws, container or instance roles)."""
    if remote.settings.get("access_key_id"):
        return True
    import botocore.session  # only for S3 remotes: botocore comes with dvc-s3

    session = botocore.session.Session(profile=remote.settings.get("profile"))
    credential_path = remote.settings.get("credentialpath")
    if credential_path:
        session.set_config_variable("credentials_file", credential_path)
    try:
        return session.get_credentials() is not None
    except Exception:  # a named profile that does not exist, an unreadable file
        return False


def public_hint() -> str:
    return f"  Or fetch the public photos (787 MB, docs/data.md):\n    {PUBLIC_COMMAND}"


def skipped_reason(environ: dict[str, str]) -> str | None:
    if environ.get("CI") == "true" or environ.get("SKIP_DVC_PULL", "0") == "1":
        return (
            f"Skipping dvc pull of the photographs (CI={environ.get('CI', '')} "
            f"SKIP_DVC_PULL={environ.get('SKIP_DVC_PULL', '0')}): the tests use tests/data.\n"
            f"  For the full data set: dvc pull {TARGET}, or {PUBLIC_COMMAND}"
        )
    return None


def pull(root: Path, environ: dict[str, str]) -> int:
    """Try the configured remote; the exit status for setup.sh."""
    if message := skipped_reason(environ):
        print(message)
        return 0
    remote = default_remote(root)
    if remote is None:
        print(f"No default DVC remote is configured, so there is nothing to pull.\n{public_hint()}")
        return 0
    where = f"the default DVC remote '{remote.name}' ({remote.url})"
    if remote.is_local and not Path(remote.url).is_dir():
        print(
            f"Not pulling: {where} is a folder that is not on this machine "
            f"(the team's sample store).\n{public_hint()}\n"
            "  Or add a remote of your own that holds them: dvc remote add -d --local ..."
        )
        return 0
    if remote.url.startswith("s3://") and not has_aws_credentials(remote):
        print(
            f"Cannot pull: {where} is an S3 bucket and no AWS credentials were found "
            "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/credentials, "
            f"or the remote's access_key_id or profile in .dvc/config.local).\n"
            f"  Set them, then: dvc pull {TARGET}\n{public_hint()}",
            file=sys.stderr,
        )
        return 1
    print(f"Pulling the photographs from {where}: dvc pull {TARGET}", flush=True)
    command = [sys.executable, "-m", "dvc", "pull", TARGET]
    if subprocess.run(command, cwd=root, env=environ, check=False).returncode != 0:
        print(
            f"dvc pull from {where} failed (its output is above).\n"
            f"  Fix the remote and run: dvc pull {TARGET}\n{public_hint()}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(pull(ROOT, dict(os.environ)))
