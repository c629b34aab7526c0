"""The local Schema Registry: Apicurio Registry (Confluent-compatible API) behind a root-path proxy.

Confluent's own registry is not published on Maven Central (only on Confluent's
repository, which this machine cannot reach), so the Docker-free stack runs
Apicurio Registry 3.0.9 from Central, storing into an H2 file under the data
dir, with its ccompat API made available at the root of ``registry_port``.
"""

from __future__ import annotations

import base64
import json
import sys
import time
import urllib.error
import urllib.request

from services.config import StackSettings
from services.stack.process import Daemon
from services.stack.secure import SecureFiles
from services.stack.toolchain import StackError, apicurio_runner, java

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class Registry:
    """Start, stop and health-check Apicurio and its proxy."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.home = settings.data_dir / "registry"
        run = settings.data_dir / "run"
        self.apicurio = Daemon("apicurio", run)
        self.proxy = Daemon("registry-proxy", run)
        self.files = SecureFiles.of(settings)

    def _auth(self) -> str | None:
        """The basic auth the proxy requires (secured stack), else None."""
        if self.settings.secure or self.files.exists():
            return self.files.registry_user_info.read_text(encoding="utf-8").strip()
        return None

    @property
    def apicurio_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.apicurio_port}"

    def start(self) -> None:
        s = self.settings
        runner = apicurio_runner(s.cache_dir)
        self.home.mkdir(parents=True, exist_ok=True)
        db = (self.home / "registry").resolve()
        if self.apicurio.pid() is None:
            self.apicurio.start(
                [
                    java(), f"-Xmx{s.registry_heap}",
                    f"-Dquarkus.http.host={s.host}",
                    f"-Dquarkus.http.port={s.apicurio_port}",
                    f"-Dquarkus.management.port={s.apicurio_management_port}",
                    f"-Dapicurio.datasource.url=jdbc:h2:file:{db}",
                    # Confluent's registry allows deleting subjects and versions; so does ours.
                    "-Dapicurio.rest.deletion.artifact.enabled=true",
                    "-Dapicurio.rest.deletion.artifact-version.enabled=true",
                    "-Dapicurio.rest.deletion.group.enabled=true",
                    "-jar", str(runner),
                ],
                cwd=self.home,
            )
        if self.proxy.pid() is None:
            auth = ["--basic-auth-file", str(self.files.registry_user_info)] if self._auth() else []
            self.proxy.start(
                [sys.executable, "-m", "services.stack.proxy", "--host", s.host, "--port", str(s.registry_port),
                 "--upstream", self.apicurio_url, *auth],
                cwd=self.home,
            )

    def healthy(self) -> bool:
        """True when ``GET /subjects`` through the proxy answers a JSON list."""
        try:
            return isinstance(_request("GET", f"{self.settings.registry_url}/subjects", auth=self._auth()), list)
        except (OSError, ValueError):
            return False

    def wait_healthy(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            for daemon in (self.apicurio, self.proxy):
                if daemon.exited_early():
                    raise StackError(f"{daemon.name} exited during start-up. Last log lines:\n{daemon.log_tail()}")
            if self.healthy():
                return
            time.sleep(0.5)
        raise StackError(f"The registry did not become healthy in time. Last log lines:\n{self.apicurio.log_tail()}")

    def ensure_backward_default(self) -> None:
        """Set the global compatibility to BACKWARD (Confluent's default; Apicurio's is NONE)."""
        url = f"{self.settings.registry_url}/config"
        current = _request("GET", url, auth=self._auth())
        if not isinstance(current, dict) or current.get("compatibilityLevel") != "BACKWARD":
            _request("PUT", url, {"compatibility": "BACKWARD"}, auth=self._auth())


def _request(method: str, url: str, body: object | None = None, *, auth: str | None = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": CONTENT_TYPE}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        raise OSError(f"{method} {url}: HTTP {err.code} {err.read()[:300]!r}") from err
