"""Java and Maven: check they are there, and resolve the stack's pinned jars into the cache."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

KAFKA_VERSION = "4.1.1"
APICURIO_VERSION = "3.0.9"  # the last Apicurio 3.x whose distribution runs on Java 17 (3.3.x needs 21)
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
# Apicurio 3.0.9's parent pom is missing on Maven Central, so its descriptor cannot be read; the 2.8
# plugin's `get -Dtransitive=false` fetches the distribution without reading it (3.x's does not).
GET_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:2.8"
POM = Path(__file__).with_name("pom.xml")


class StackError(RuntimeError):
    """A problem starting or stopping the local stack, with a message that says what to do."""


def _on_path(command: str, missing: str) -> str:
    """Path of ``command``, or a StackError: ``missing`` (what it is for and how to install it), or Docker."""
    path = shutil.which(command)
    if path is None:
        raise StackError(f"{missing}, or use Docker: docker compose -f docker-compose.kafka.yml up")
    return path


def java() -> str:
    """Path of a ``java`` 17 or newer, or a StackError that says what to install."""
    path = _on_path(
        "java",
        "Java not found: the local stack runs Kafka and the Schema Registry on a JVM. "
        "Install JDK 17+ (Debian/Ubuntu: apt-get install openjdk-17-jdk-headless)",
    )
    out = subprocess.run([path, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)', out)
    if match is None or int(match.group(1)) < 17:
        raise StackError(f"Java 17+ is needed, found: {out.splitlines()[0] if out else 'unknown'} at {path}")
    return path


def maven() -> str:
    """Path of ``mvn``, or a StackError that says what to install."""
    return _on_path(
        "mvn",
        "Maven not found: the local stack resolves pinned Kafka and registry jars with it. "
        "Install Maven 3.8+ (Debian/Ubuntu: apt-get install maven)",
    )


def maven_repo() -> Path:
    """The local Maven repository (``MAVEN_REPO_LOCAL`` or ``~/.m2/repository``): the download cache."""
    return Path(os.environ.get("MAVEN_REPO_LOCAL", Path.home() / ".m2" / "repository"))


def _mvn(args: list[str], what: str) -> None:
    cmd = [maven(), "-B", "-q", f"-Dmaven.repo.local={maven_repo()}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        errors = [line for line in proc.stdout.splitlines() if "ERROR" in line][:5]
        raise StackError(f"Maven could not resolve {what}:\n" + "\n".join(errors or [proc.stdout[-2000:]]))


@contextlib.contextmanager
def _resolving(cache_dir: Path) -> Iterator[None]:
    """Hold the cache's lock: stacks started at once (test workers, a second shell) on an empty cache
    resolve each artifact once, one after the other (seen: two workers unpacking into one directory)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def kafka_classpath(cache_dir: Path) -> Path:
    """Directory holding Apache Kafka's runtime jars (resolved once with Maven, then reused)."""
    libs = cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"
    done = libs / ".complete"
    if done.exists():
        return libs
    with _resolving(cache_dir):
        if done.exists():  # resolved by another process while this one waited
            return libs
        libs.mkdir(parents=True, exist_ok=True)
        _mvn(
            ["-f", str(POM), f"{DEPENDENCY_PLUGIN}:copy-dependencies", "-DincludeScope=runtime",
             f"-DoutputDirectory={libs}"],
            f"Apache Kafka {KAFKA_VERSION}",
        )
        done.touch()
    return libs


def apicurio_runner(cache_dir: Path) -> Path:
    """Path of Apicurio Registry's runner jar (resolved once with Maven, unpacked into the cache)."""
    home = cache_dir / f"apicurio-registry-{APICURIO_VERSION}"
    runner = home / f"apicurio-registry-app-{APICURIO_VERSION}-runner.jar"
    if runner.exists():
        return runner
    with _resolving(cache_dir):
        if not runner.exists():  # not resolved by another process while this one waited
            _resolve_apicurio(home)
    return runner


def _resolve_apicurio(home: Path) -> None:
    artifact = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
    _mvn([f"{GET_PLUGIN}:get", f"-Dartifact={artifact}", "-Dtransitive=false"],
         f"Apicurio Registry {APICURIO_VERSION}")
    tgz = (maven_repo() / "io" / "apicurio" / "apicurio-registry-app" / APICURIO_VERSION
           / f"apicurio-registry-app-{APICURIO_VERSION}-all.tar.gz")
    partial = home.with_name(home.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with tarfile.open(tgz) as archive:
        archive.extractall(partial, filter="data")
    partial.rename(home)
