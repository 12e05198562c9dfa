"""Start and stop a whole local mediaflow: SeaweedFS, migrations, the four services
and nginx. Used by ``make run`` / ``make stop`` and by the end-to-end tests, which
start their own stack on free ports beside any running one."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import httpx

from mediaflow_libs.egress import endpoints

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("auth", "gateway", "notifier", "worker")
S3_PORT = 8333
# What `weed mini` listens on besides S3: master, volume, filer, WebDAV, Iceberg, metrics and
# admin, each with a gRPC twin 10000 above.
SEAWEEDFS_PORTS = tuple(
    port
    for base in (S3_PORT, 9333, 9340, 8888, 7333, 8181, 9101, 23646)
    for port in (base, base + 10000)
)
# RabbitMQ's management UI, inter-node port and epmd.
RABBITMQ_EXTRA_PORTS = (15672, 25672, 4369)
LOCAL_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432"
# Children started by this process, kept so they are reaped (not left as zombies or
# reported as "still running" when their Popen object is collected).
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass
class StackConfig:
    run_dir: Path
    database: str = "mediaflow"
    amqp_namespace: str = "media"
    bucket: str = "media"
    ingress_port: int = 8080
    ports: dict[str, int] = field(
        default_factory=lambda: {"auth": 8101, "gateway": 8102, "notifier": 8103, "worker": 8104}
    )
    # auth's INTERNAL_PORT (the session check); 0 picks 8111 beside the default ports, a free
    # port beside any others, so that stacks started on free ports never share one.
    auth_internal_port: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)
    events_extra_nginx: str = ""
    # The database server and the broker: the machine's own by default (started when down);
    # the chaos tests point a stack at private ones they may restart.
    postgres_url: str = LOCAL_POSTGRES_URL
    amqp_url: str | None = None  # None: the caller's AMQP_URL, else the services' default

    def __post_init__(self) -> None:
        if not self.auth_internal_port:
            self.auth_internal_port = 8111 if self.ports.get("auth") == 8101 else free_port()

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.ingress_port}"

    @property
    def database_url(self) -> str:
        return f"{self.postgres_url}/{self.database}"

    def service_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_until(check: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not come up within {timeout:.0f}s")


# The one local SeaweedFS (127.0.0.1:8333) serves every checkout of this machine user, so its
# keys live beside the user's other state, not in a checkout: a fresh clone (CI's, say) must
# agree with a server another checkout started.
MACHINE_STATE_DIR = (
    Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "mediaflow"
)


def local_secrets() -> dict[str, str]:
    """Secrets for a local stack, made once and kept out of git: the S3 keys once per machine
    user, the service secret once per checkout."""
    checkout = _secrets_file(
        REPO_ROOT / ".run" / "secrets.env", lambda: {"SERVICE_SECRET": secrets.token_urlsafe(48)}
    )
    machine = _secrets_file(
        MACHINE_STATE_DIR / "seaweedfs.env",
        lambda: {
            "S3_ACCESS_KEY_ID": "mf" + secrets.token_hex(8),
            "S3_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
        },
    )
    return checkout | machine


def _secrets_file(path: Path, make: Callable[[], dict[str, str]]) -> dict[str, str]:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text("".join(f"{k}={v}\n" for k, v in make().items()))
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


# --- infrastructure -------------------------------------------------------------------


def ensure_postgres() -> None:
    if port_open(5432):
        return
    for version in (
        sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    ):
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=False
        )
    wait_until(lambda: port_open(5432), "PostgreSQL on 127.0.0.1:5432")


def ensure_rabbitmq() -> None:
    if port_open(5672):
        return
    subprocess.run(["rabbitmq-server", "-detached"], check=False)
    wait_until(lambda: port_open(5672), "RabbitMQ on 127.0.0.1:5672", timeout=90)


def ensure_seaweedfs(data_dir: Path, log_dir: Path, creds: dict[str, str]) -> bool:
    """Start ``weed mini`` (S3 on 127.0.0.1:8333) unless one already answers; whether this
    call started it (and so whoever called it should stop it: :func:`stop_seaweedfs`)."""
    if port_open(S3_PORT):
        return False
    data_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    env = os.environ | {
        "AWS_ACCESS_KEY_ID": creds["S3_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": creds["S3_SECRET_ACCESS_KEY"],
    }
    log_path = log_dir / "seaweedfs.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                _bin("weed"),
                "mini",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-dir={data_dir}",
                "-admin.ui=false",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (log_dir.parent / "seaweedfs.pid").write_text(str(process.pid))
    _children[process.pid] = process

    def s3_ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"weed mini exited with {process.returncode}; see {log_path}")
        try:
            return httpx.get(f"http://127.0.0.1:{S3_PORT}/", timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    wait_until(s3_ready, "SeaweedFS S3 on 127.0.0.1:8333", timeout=90)
    return True


def stop_seaweedfs() -> None:
    stop_pid_file(REPO_ROOT / ".run" / "seaweedfs.pid")


def stop_rabbitmq_app() -> None:
    """Stop the broker's application (connections drop, the port closes) but not its VM,
    so that :func:`start_rabbitmq_app` brings it back in seconds. For fault tests."""
    subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, capture_output=True)
    wait_until(lambda: not port_open(5672), "RabbitMQ to stop listening", timeout=30)


def start_rabbitmq_app() -> None:
    subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, capture_output=True)
    wait_until(lambda: port_open(5672), "RabbitMQ on 127.0.0.1:5672", timeout=60)


def apply_migrations(database_url: str) -> None:
    subprocess.run(
        [_bin("mediaflow-migrate"), "--create-database"],
        check=True,
        env=os.environ | {"DATABASE_URL": database_url},
    )


# --- services -------------------------------------------------------------------------


def listening_ports(config: StackConfig) -> list[int]:
    """Every port this stack's servers listen on (and Prometheus's, for `make observe`)."""
    broker = config.amqp_url or os.environ.get("AMQP_URL", "amqp://127.0.0.1:5672/")
    servers = [port for url in (config.database_url, broker) for _, port in endpoints(url)]
    return sorted(
        {
            *SEAWEEDFS_PORTS,
            *servers,
            *RABBITMQ_EXTRA_PORTS,
            config.ingress_port,
            *config.ports.values(),
            config.auth_internal_port,
            int(os.environ.get("OBSERVE_PORT", "9090")),
        }
    )


def egress_deny(config: StackConfig, extra: str = "") -> str:
    """EGRESS_DENY for the stack: every port it listens on, on every loopback address (its
    servers bind 127.0.0.1; the sample origin listens on a free port, which stays open)."""
    entries = [f"127.0.0.0/8:{p},[::1]/128:{p}" for p in listening_ports(config)]
    return ",".join([*entries, *([extra] if extra.strip() else [])])


def service_env(config: StackConfig, service: str) -> dict[str, str]:
    defaults = {
        "PUBLIC_URL": config.public_url,
        "EGRESS_ALLOW_CIDRS": "127.0.0.1/32",
        "LOG_FORMAT": "json",
    }
    fixed = {
        **local_secrets(),
        "DATABASE_URL": config.database_url,
        "AMQP_NAMESPACE": config.amqp_namespace,
        "S3_BUCKET": config.bucket,
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}",
        "AUTH_INTERNAL_URL": f"http://127.0.0.1:{config.auth_internal_port}",
        # The services of this stack (a bench may run only some of them).
        **{f"{name.upper()}_URL": config.service_url(name) for name in config.ports},
        "HOST": "127.0.0.1",
        "PORT": str(config.ports[service]),
    }
    if service == "auth":
        fixed["INTERNAL_PORT"] = str(config.auth_internal_port)
    if config.amqp_url is not None:
        fixed["AMQP_URL"] = config.amqp_url
    given = dict(os.environ) | config.extra_env
    # What the caller denies is denied on top of the stack's own ports.
    fixed["EGRESS_DENY"] = egress_deny(config, given.get("EGRESS_DENY", ""))
    # The caller's environment passes through; what ties the stack together is fixed.
    return defaults | given | fixed


def start_service(config: StackConfig, service: str) -> subprocess.Popen[bytes]:
    logs = config.run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"{service}.log").open("ab") as log:
        process = subprocess.Popen(
            [_bin(f"mediaflow-{service}")],
            env=service_env(config, service),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=config.run_dir,
        )
    (config.run_dir / f"{service}.pid").write_text(str(process.pid))
    _children[process.pid] = process
    return process


def wait_healthy(config: StackConfig, service: str, process: subprocess.Popen[bytes]) -> None:
    def ready() -> bool:
        if process.poll() is not None:
            log = config.run_dir / "logs" / f"{service}.log"
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{service} exited with {process.returncode}:\n{tail}")
        try:
            return httpx.get(f"{config.service_url(service)}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, f"{service} on port {config.ports[service]}")


def render_nginx(config: StackConfig) -> Path:
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (config.run_dir / "nginx-tmp" / sub).mkdir(parents=True, exist_ok=True)
    (config.run_dir / "logs").mkdir(parents=True, exist_ok=True)
    template = Template((Path(__file__).parent / "nginx.conf.template").read_text())
    text = template.safe_substitute(
        run_dir=str(config.run_dir),
        ingress_port=config.ingress_port,
        auth_port=config.ports["auth"],
        gateway_port=config.ports["gateway"],
        notifier_port=config.ports["notifier"],
        events_extra=config.events_extra_nginx,
    )
    path = config.run_dir / "nginx.conf"
    path.write_text(text)
    return path


def start_nginx(config: StackConfig) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    conf = render_nginx(config)
    subprocess.run([nginx, "-t", "-q", "-p", str(config.run_dir), "-c", str(conf)], check=True)
    subprocess.run([nginx, "-p", str(config.run_dir), "-c", str(conf)], check=True)
    wait_until(lambda: port_open(config.ingress_port), f"nginx on port {config.ingress_port}")


def reload_nginx(config: StackConfig) -> None:
    """``nginx -s reload``: new workers take the (re-read) configuration, the old ones
    finish the connections they hold."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    conf = config.run_dir / "nginx.conf"
    subprocess.run(
        [nginx, "-p", str(config.run_dir), "-c", str(conf), "-s", "reload"],
        check=True,
        capture_output=True,
    )


def up(config: StackConfig, *, data_dir: Path) -> None:
    """Bring the whole stack up; whatever already runs is left as it is."""
    config.run_dir.mkdir(parents=True, exist_ok=True)
    if config.postgres_url == LOCAL_POSTGRES_URL:
        ensure_postgres()
    if config.amqp_url is None:
        ensure_rabbitmq()
    ensure_seaweedfs(data_dir / "seaweedfs", REPO_ROOT / ".run" / "logs", local_secrets())
    apply_migrations(config.database_url)
    for service in SERVICES:
        if _alive(config.run_dir / f"{service}.pid"):
            continue
        process = start_service(config, service)
        wait_healthy(config, service, process)
    if not _alive(config.run_dir / "nginx.pid"):
        start_nginx(config)


def kill_service(config: StackConfig, service: str) -> None:
    """SIGKILL a service: no graceful shutdown, as when a node dies."""
    pid_file = config.run_dir / f"{service}.pid"
    pid = int(pid_file.read_text().strip())
    os.killpg(pid, signal.SIGKILL)
    _reap(pid)
    wait_until(lambda: not _alive(pid_file), f"{service} to die", timeout=10)


def restart_service(config: StackConfig, service: str) -> None:
    process = start_service(config, service)
    wait_healthy(config, service, process)


def _alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return False
    try:
        # A killed child its parent has not reaped yet is a zombie: dead all the same.
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True
    return state != "Z"


def _reap(pid: int) -> None:
    child = _children.pop(pid, None)
    if child is not None:
        child.wait()


def stop_pid_file(pid_file: Path, timeout: float = 15.0) -> None:
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        return
    except PermissionError:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid_file):
            break
        time.sleep(0.1)
    else:
        os.killpg(pid, signal.SIGKILL)
    _reap(pid)
    pid_file.unlink(missing_ok=True)


def down(run_dir: Path, *, include_seaweedfs: bool = True) -> None:
    if (run_dir / "nginx.pid").exists():
        stop_pid_file(run_dir / "nginx.pid")
    for service in SERVICES:
        stop_pid_file(run_dir / f"{service}.pid")
    if include_seaweedfs:
        stop_seaweedfs()
