"""The secured local stack (``fraudstream stack up --secure``): SASL_SSL, SCRAM users, ACLs, registry auth.

On first start it writes, under ``<data dir>/secure``: a CA and the broker's certificate
(JDK ``keytool``), one random password per principal, and the registry's basic-auth
user info. Clients get the CA (``ca.pem``) and the password files, never a secret on a
command line. Principals:

* ``admin``: super user (the broker's own inter-broker login, the stack's probes, ACL setup);
* ``detector``: the pipeline's principal (generator, detector, consume, produce, evaluate,
  dashboard): reads and writes the project's topics, its internal topics, transactional
  ids and consumer groups, all by prefix;
* ``reader``: may only read ``streaming.transactions.fraud`` (with groups named ``fraudstream*``).

The KRaft controller listener stays PLAINTEXT on the stack's host (the controller's own
requests come from ``User:ANONYMOUS``, a super user there); clients use the SASL_SSL listener.
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from services.client_properties import redact
from services.config import TOPICS, KafkaSettings, StackSettings
from services.stack.toolchain import StackError, java

MECHANISM = "SCRAM-SHA-512"
PRINCIPALS = ("admin", "detector", "reader")
REGISTRY_USER = "fraudstream"


@dataclass(frozen=True)
class SecureFiles:
    """Where the secured stack keeps its certificates and secrets: all in ``root`` (see ``of``)."""

    root: Path
    ca_pem: Path  # the local CA's certificate: what clients trust
    keystore: Path  # the broker's key and certificate
    truststore: Path  # the CA, as the broker trusts it
    registry_user_info: Path  # the registry's basic-auth user:password

    @classmethod
    def of(cls, settings: StackSettings) -> SecureFiles:
        root = (settings.data_dir / "secure").resolve()
        return cls(
            root, ca_pem=root / "ca.pem", keystore=root / "broker.p12", truststore=root / "truststore.p12",
            registry_user_info=root / "registry.user-info",
        )

    def password_file(self, principal: str) -> Path:
        return self.root / f"{principal}.password"

    def password(self, principal: str) -> str:
        return self.password_file(principal).read_text(encoding="utf-8").strip()

    def exists(self) -> bool:
        return self.registry_user_info.exists()

    def redact(self, text: str) -> str:
        """``text`` without any of the stack's secrets."""
        if not self.root.exists():
            return text
        found = [p.read_text(encoding="utf-8").strip() for p in self.root.glob("*.password")]
        if self.registry_user_info.exists():
            found.append(self.registry_user_info.read_text(encoding="utf-8").strip().partition(":")[2])
        return redact(text, found)

    def ensure(self, host: str) -> None:
        """Write the passwords and certificates that are missing (first start)."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for principal in (*PRINCIPALS, "store"):
            _secret_file(self.password_file(principal), secrets.token_urlsafe(24))
        _secret_file(self.registry_user_info, f"{REGISTRY_USER}:{secrets.token_urlsafe(24)}")
        if not self.keystore.exists():
            self._certificates(host)

    def _certificates(self, host: str) -> None:
        keytool = str(Path(java()).resolve().parent / "keytool")
        pw = self.password("store")
        ca_store, ca_der = self.root / "ca.p12", self.root / "broker.csr"
        common = ["-storetype", "PKCS12", "-storepass", pw, "-keypass", pw, "-keyalg", "RSA", "-keysize", "2048"]
        san = f"SAN=dns:localhost,ip:127.0.0.1,{'ip' if host.replace('.', '').isdigit() else 'dns'}:{host}"
        steps = [
            ["-genkeypair", "-alias", "ca", "-keystore", ca_store, "-dname", "CN=fraudstream-local-ca",
             "-ext", "bc:c", "-validity", "3650", *common],
            ["-exportcert", "-rfc", "-alias", "ca", "-keystore", ca_store, "-storepass", pw, "-file", self.ca_pem],
            ["-genkeypair", "-alias", "broker", "-keystore", self.keystore, "-dname", f"CN={host}",
             "-ext", san, "-validity", "3650", *common],
            ["-certreq", "-alias", "broker", "-keystore", self.keystore, "-storepass", pw, "-file", ca_der],
            ["-gencert", "-alias", "ca", "-keystore", ca_store, "-storepass", pw, "-infile", ca_der,
             "-outfile", self.root / "broker.pem", "-rfc", "-ext", san, "-validity", "3650"],
            ["-importcert", "-noprompt", "-alias", "ca", "-file", self.ca_pem, "-keystore", self.keystore,
             "-storepass", pw],
            ["-importcert", "-noprompt", "-alias", "broker", "-file", self.root / "broker.pem",
             "-keystore", self.keystore, "-storepass", pw],
            ["-importcert", "-noprompt", "-alias", "ca", "-file", self.ca_pem, "-keystore", self.truststore,
             "-storetype", "PKCS12", "-storepass", pw],
        ]
        for step in steps:
            done = subprocess.run([keytool, *map(str, step)], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise StackError(f"keytool {step[0]} failed: {done.stdout}{done.stderr}".replace(pw, "***"))

    def server_properties(self, s: StackSettings) -> dict[str, str]:
        """The broker settings of the SASL_SSL listener, SCRAM and the StandardAuthorizer."""
        pw = self.password("store")
        jaas = (f'org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" '
                f'password="{self.password("admin")}";')
        return {
            "listeners": f"SASL_SSL://{s.host}:{s.kafka_port},CONTROLLER://{s.host}:{s.controller_port}",
            "advertised.listeners": f"SASL_SSL://{s.host}:{s.kafka_port}",
            "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms": MECHANISM,
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.keystore),
            "ssl.keystore.password": pw,
            "ssl.key.password": pw,
            "ssl.truststore.type": "PKCS12",
            "ssl.truststore.location": str(self.truststore),
            "ssl.truststore.password": pw,
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": "User:admin;User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
        }

    def format_arguments(self) -> list[str]:
        """``kafka-storage format`` arguments creating the SCRAM users (KRaft: at format time)."""
        out: list[str] = []
        for principal in PRINCIPALS:
            out += ["--add-scram", f"{MECHANISM}=[name={principal},password={self.password(principal)}]"]
        return out

    def connection(self, s: StackSettings, principal: str) -> KafkaSettings:
        """The connection section of ``principal`` on this stack (nothing from the environment)."""
        return KafkaSettings.only(
            bootstrap_servers=s.bootstrap_servers, schema_registry_url=s.registry_url,
            security_protocol="SASL_SSL", sasl_mechanism=MECHANISM, sasl_username=principal,
            sasl_password=SecretStr(self.password(principal)), ssl_ca_location=str(self.ca_pem),
            registry_basic_auth_user_info=SecretStr(self.registry_user_info.read_text(encoding="utf-8").strip()),
        )

    def client_env(self, s: StackSettings, principal: str = "detector") -> dict[str, str]:
        """The environment a client of ``principal`` needs (secrets as ``_FILE`` paths)."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": s.bootstrap_servers,
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": MECHANISM,
            "KAFKA_SASL_USERNAME": principal,
            "KAFKA_SASL_PASSWORD_FILE": str(self.password_file(principal)),
            "KAFKA_SSL_CA_LOCATION": str(self.ca_pem),
            "SCHEMA_REGISTRY_URL": s.registry_url,
            "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO_FILE": str(self.registry_user_info),
        }


def acl_bindings() -> list[tuple[str, str, str, str, str]]:
    """``(principal, resource type, pattern type, name, operation)`` of every ACL the stack sets."""
    pipeline_topics = ("queueing.transactions", "streaming.transactions.", "fraudstream")
    out = [("detector", "TOPIC", "PREFIXED", name, op)
           for name in pipeline_topics for op in ("READ", "WRITE", "DESCRIBE", "CREATE", "DESCRIBE_CONFIGS")]
    out += [("detector", "GROUP", "PREFIXED", "fraudstream", op) for op in ("READ", "DESCRIBE")]
    out += [("detector", "TRANSACTIONAL_ID", "PREFIXED", "fraudstream", op) for op in ("WRITE", "DESCRIBE")]
    out += [("detector", "BROKER", "LITERAL", "kafka-cluster", op) for op in ("IDEMPOTENT_WRITE", "DESCRIBE")]
    out += [("reader", "TOPIC", "LITERAL", TOPICS.fraud, op) for op in ("READ", "DESCRIBE")]
    out += [("reader", "GROUP", "PREFIXED", "fraudstream", "READ")]
    return out


def apply_acls(admin_connection: KafkaSettings) -> None:
    """Create the stack's ACLs (idempotent: an existing binding is left as it is)."""
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
    )

    from services.kafka import admin_config

    admin = AdminClient(admin_config(admin_connection))
    bindings = [
        AclBinding(ResourceType[rtype], name, ResourcePatternType[pattern], f"User:{principal}", "*",
                   AclOperation[op], AclPermissionType.ALLOW)
        for principal, rtype, pattern, name, op in acl_bindings()
    ]
    for future in admin.create_acls(bindings, request_timeout=30).values():
        future.result()


def _secret_file(path: Path, value: str) -> None:
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(value + "\n", encoding="utf-8")
