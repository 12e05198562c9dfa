"""``python -m devstack up|down|demo`` — what ``make run`` and ``make stop`` call."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

from devstack import media, observe, stack

RUN_DIR = stack.REPO_ROOT / ".run" / "local"
DATA_DIR = stack.REPO_ROOT / ".data"
SAMPLE_BYTES = 64 * 1024 * 1024


def up() -> stack.StackConfig:
    config = stack.StackConfig(run_dir=RUN_DIR)
    started = time.monotonic()
    stack.up(config, data_dir=DATA_DIR)
    print(
        f"mediaflow is up at {config.public_url} ({time.monotonic() - started:.1f}s); "
        f"logs in {RUN_DIR.relative_to(stack.REPO_ROOT)}/logs"
    )
    return config


def demo(config: stack.StackConfig) -> int:
    sample_dir = DATA_DIR / "sample"
    sample = sample_dir / "sample.mp4"
    if not sample.exists() or sample.stat().st_size != SAMPLE_BYTES:
        media.write_sample_mp4(sample, SAMPLE_BYTES)
    source_sha256 = media.sha256_of(sample)
    env = os.environ | {
        "MEDIAFLOW_URL": config.public_url,
        "MEDIAFLOW_CONFIG": str(config.run_dir / "demo-session.json"),
        "MEDIAFLOW_PASSWORD": secrets.token_urlsafe(16),
    }
    cli = str(Path(sys.executable).parent / "mediaflow")
    email = f"demo-{secrets.token_hex(4)}@example.com"
    subprocess.run([cli, "sign-up", email], env=env, check=True)
    with media.LocalOrigin(sample_dir) as origin:
        source_url = f"{origin.url}/sample.mp4"
        print(
            f"submitting {source_url} ({SAMPLE_BYTES // (1024 * 1024)} MiB, "
            f"sha256 {source_sha256[:16]}…)"
        )
        # The CLI downloads the file too; into the run directory, never the caller's.
        downloads = config.run_dir / "downloads"
        shutil.rmtree(downloads, ignore_errors=True)  # one demo's file, not one per run
        downloads.mkdir(parents=True)
        result = subprocess.run(
            [cli, "submit", source_url, "-o", f"{downloads}/"],
            env=env,
            capture_output=False,
            stdout=subprocess.PIPE,
            text=True,
        )
    if result.returncode != 0:
        print("demo failed: the task did not succeed", file=sys.stderr)
        return result.returncode
    task_id = result.stdout.strip().splitlines()[0]
    return _verify_stored_object(config, env, task_id, source_sha256)


def _verify_stored_object(
    config: stack.StackConfig, env: dict[str, str], task_id: str, source_sha256: str
) -> int:
    session = json.loads(Path(env["MEDIAFLOW_CONFIG"]).read_text())
    with httpx.Client(
        base_url=config.public_url, headers={"cookie": f"mf_session={session['token']}"}
    ) as client:
        redirect = client.get(f"/v1/tasks/{task_id}/download")
        if redirect.status_code != 302:
            print(f"download link refused: {redirect.status_code} {redirect.text}", file=sys.stderr)
            return 1
        download_url = redirect.headers["location"]
    digest = hashlib.sha256()
    with httpx.stream("GET", download_url, timeout=60) as response:
        response.raise_for_status()
        for block in response.iter_bytes(media.CHUNK):
            digest.update(block)
    if digest.hexdigest() != source_sha256:
        print(
            f"stored object sha256 {digest.hexdigest()} != source {source_sha256}", file=sys.stderr
        )
        return 1
    print(f"verified: the stored object's sha256 matches the source ({source_sha256})")
    print(f"download URL (valid 15 min): {download_url}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="devstack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "demo"])
    command = parser.parse_args().command
    if command == "down":
        stack.down(RUN_DIR)
        observe.down()
        print("mediaflow stopped")
        return
    config = up()
    if command == "demo":
        sys.exit(demo(config))


if __name__ == "__main__":
    main()
