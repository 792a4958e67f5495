"""Generate the deployment's secrets, so that none is ever committed.

    python scripts/make_secrets.py compose                  # .env beside docker-compose.yml
    python scripts/make_secrets.py kubernetes local         # overlays/local/secrets/
    python scripts/make_secrets.py kubernetes production    # overlays/production/secrets/

Compose reads `.env` (POSTGRES_PASSWORD, API_KEY, GRAFANA_ADMIN_PASSWORD) and refuses to
start without it; an overlay's kustomization reads its `secrets/` folder (db.env, api.env,
the PostgreSQL server's TLS certificate) and refuses to render without it. Both are
gitignored. A value or file that exists is kept, never replaced: PostgreSQL keeps the
password it was initialised with, so a new one would lock the API out. `--root` writes
under another copy of the project (tests). Needs `openssl` for the certificate.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DB_USER = DB_NAME = "catsdogs"
DB_HOST = "cats-dogs-postgres"  # the StatefulSet's Service (deployment/kubernetes/base)
COMPOSE_KEYS = ("POSTGRES_PASSWORD", "API_KEY", "GRAFANA_ADMIN_PASSWORD")


def token() -> str:
    """32 random bytes, URL-safe: fits a URL's password field without escaping."""
    return secrets.token_urlsafe(32)


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read (0600), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read_env(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.strip().startswith("#")}


def compose(root: Path) -> list[str]:
    """`.env` for docker-compose.yml: the missing values added, the present ones kept."""
    path = root / ".env"
    values = read_env(path)
    added = [key for key in COMPOSE_KEYS if not values.get(key)]
    if added:
        values.update({key: token() for key in added})
        write_private(path, "".join(f"{k}={v}\n" for k, v in values.items()))
    return [f"{path}: {'added ' + ', '.join(added) if added else 'kept as it was'}"]


def database_env(password: str) -> str:
    """The PostgreSQL credentials and the URL the API uses: TLS required (the server in the
    overlay has it on; `require` encrypts without checking the self-signed certificate)."""
    url = f"postgresql://{DB_USER}:{password}@{DB_HOST}:5432/{DB_NAME}?sslmode=require"
    return (
        f"POSTGRES_USER={DB_USER}\nPOSTGRES_PASSWORD={password}\n"
        f"POSTGRES_DB={DB_NAME}\nDATABASE_URL={url}\n"
    )


def certificate(folder: Path) -> None:
    """A self-signed certificate for the PostgreSQL server (10 years, its Service names)."""
    names = f"DNS:{DB_HOST},DNS:{DB_HOST}.cats-dogs.svc,DNS:{DB_HOST}.cats-dogs.svc.cluster.local"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "3650", "-subj", f"/CN={DB_HOST}", "-addext",
         f"subjectAltName={names}", "-keyout", str(folder / "tls.key"),
         "-out", str(folder / "tls.crt")],
        check=True, capture_output=True,
    )  # fmt: skip
    (folder / "tls.key").chmod(0o600)


def kubernetes(root: Path, overlay: str) -> list[str]:
    """An overlay's secrets/ folder: db.env, api.env, tls.crt and tls.key."""
    folder = root / "deployment" / "kubernetes" / "overlays" / overlay / "secrets"
    if not folder.parent.is_dir():
        raise SystemExit(f"no overlay {overlay} under {folder.parent.parent}")
    files = {
        "db.env": lambda: write_private(folder / "db.env", database_env(token())),
        "api.env": lambda: write_private(folder / "api.env", f"api-key={token()}\n"),
        "tls.crt": lambda: certificate(folder),
    }
    report = []
    for name, make in files.items():
        if (folder / name).exists():
            report.append(f"{folder / name}: kept")
        else:
            folder.mkdir(parents=True, exist_ok=True)
            make()
            report.append(f"{folder / name}: generated")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=["compose", "kubernetes"])
    parser.add_argument("overlay", nargs="?", help="kubernetes: local or production")
    parser.add_argument("--root", type=Path, default=ROOT, help="the project copy to write in")
    args = parser.parse_args(argv)
    if args.target == "kubernetes" and not args.overlay:
        parser.error("kubernetes needs an overlay: local or production")
    made = compose(args.root) if args.target == "compose" else kubernetes(args.root, args.overlay)
    print("\n".join(made))


if __name__ == "__main__":
    main()
