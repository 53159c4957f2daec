"""ROS 2 security (SROS2) for the package's nodes: a keystore in SROS2's layout, made with the
`cryptography` package (SROS2 is not on PyPI), and the settings that run a node inside it.

A node runs secured with `ROS_SECURITY_ENABLE=true`, `ROS_SECURITY_STRATEGY=Enforce`,
`ROS_SECURITY_KEYSTORE=<keystore>` and `--ros-args --enclave /spec_vla_ros/<node name>`; the launch
files and `spec-vla-launch` do that for every node when given `keystore:=DIR`, and
`spec-vla-keystore DIR` makes the keystore with one enclave per node of the package.

Layout (what SROS2's `ros2 security create_keystore` and `create_enclave` write, so its tools and
any ROS 2 installation read it):

    public/ca.cert.pem                    the keystore's CA, self-signed (prime256v1, as DDS-Security asks)
    public/identity_ca.cert.pem, public/permissions_ca.cert.pem  -> ca.cert.pem
    private/ca.key.pem                    the CA's key: whoever holds it can admit anyone (keep it off robots)
    private/identity_ca.key.pem, private/permissions_ca.key.pem  -> ca.key.pem
    enclaves/governance.xml, .p7s         the domain's rules, S/MIME-signed by the permissions CA
    enclaves/<enclave>/cert.pem, key.pem  the enclave's identity, CN=<enclave>, issued by the CA
    enclaves/<enclave>/identity_ca.cert.pem, permissions_ca.cert.pem, governance.p7s -> the above
    enclaves/<enclave>/permissions.xml, .p7s   what the enclave may publish and subscribe, signed

Governance (SROS2's default): participants without a certificate of this CA are not admitted,
discovery, liveliness and all data are encrypted, and every topic is read- and write-access
controlled. Permissions: each enclave of the keystore may publish and subscribe every ROS topic
and service (`rt/*`, `rq/*`, `rr/*`), as SROS2's `create_enclave` grants by default. Per-topic
grants were not chosen: the hardware configuration remaps the camera and command topics at launch
(a keystore would have to be re-signed per remapping), rmw and rclpy add topics of their own
(`ros_discovery_info`, `rosout`, parameter events and services, type description) that change
between ROS releases, and no per-topic rule can be exercised where the pip Fast DDS lacks the
access-control plugin (README, "Security (SROS2)"). Who may drive the robot is therefore decided
by who holds an enclave of the keystore; `--enclave` on the command adds one for a camera driver
or an operator's console.

The keystore admits participants on every ROS domain (0-232) unless made for one (`domain_id`).
"""
from __future__ import annotations

import datetime
import os
import re
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from ..errors import one_line

# The variables rcl reads (rcl/security.c).
ENABLE_VARIABLE = "ROS_SECURITY_ENABLE"
STRATEGY_VARIABLE = "ROS_SECURITY_STRATEGY"
KEYSTORE_VARIABLE = "ROS_SECURITY_KEYSTORE"
# Enforce: a node whose enclave cannot be used does not start (Permissive runs it unsecured when its
# enclave directory is missing).
STRATEGY = "Enforce"

ENCLAVE_ROOT = "/spec_vla_ros"
CA_NAME = "spec_vla_ros keystore CA"
VALIDITY = datetime.timedelta(days=3650)        # SROS2's ten years
ROS_DOMAIN_IDS = (0, 232)                       # the domain ids ROS 2 allows

PUBLIC, PRIVATE, ENCLAVES = "public", "private", "enclaves"
CA_CERT, CA_KEY = "ca.cert.pem", "ca.key.pem"
IDENTITY_CA_CERT, PERMISSIONS_CA_CERT = "identity_ca.cert.pem", "permissions_ca.cert.pem"
IDENTITY_CA_KEY, PERMISSIONS_CA_KEY = "identity_ca.key.pem", "permissions_ca.key.pem"
GOVERNANCE, PERMISSIONS = "governance", "permissions"
# The files rmw reads from an enclave directory (rmw_security_common's get_security_files).
ENCLAVE_FILES = (IDENTITY_CA_CERT, "cert.pem", "key.pem", PERMISSIONS_CA_CERT, "governance.p7s",
                 "permissions.p7s")
# Every ROS topic (rt/), service request (rq/) and reply (rr/), as DDS topic names.
ALL_ROS_TOPICS = ("rq/*", "rr/*", "rt/*")

_OMG_SCHEMA = "http://www.omg.org/spec/DDS-SECURITY/20170901/omg_shared_ca_{}.xsd"
_XSI = "http://www.w3.org/2001/XMLSchema-instance"
# What rmw_fastrtps says when its Fast DDS was built without the DDS Security plugins (-DSECURITY=OFF),
# as the Fast DDS of the ROS 2 wheels on PyPI is.
NO_SECURITY_PLUGINS = "doesn't have the security libraries"
PROBE_TIMEOUT_S = 60
# A ROS namespace-like name (rcl's enclave rule): absolute, segments of letters, digits and '_'.
_ENCLAVE_PATTERN = re.compile(r"(/[A-Za-z_][A-Za-z0-9_]*)+")


class KeystoreError(ValueError):
    """A keystore or enclave that cannot be made or used; its text is one line naming what is wrong."""


def node_enclave(node_name: str) -> str:
    """The enclave a node of the package runs in: /spec_vla_ros/<node name>."""
    return f"{ENCLAVE_ROOT}/{node_name}"


def check_enclave_name(enclave: str) -> str:
    if not _ENCLAVE_PATTERN.fullmatch(enclave):
        raise KeystoreError(f"enclave '{enclave}': expected an absolute ROS name such as "
                            f"{node_enclave('camera_driver')} (segments of letters, digits and '_')")
    return enclave


def enclave_dir(keystore: Path, enclave: str) -> Path:
    return Path(keystore) / ENCLAVES / check_enclave_name(enclave).lstrip("/")


def security_environment(keystore) -> dict[str, str]:
    """The variables that run a node under ROS 2 security with `keystore` (empty when '' = off)."""
    if not str(keystore or ""):
        return {}
    return {ENABLE_VARIABLE: "true", STRATEGY_VARIABLE: STRATEGY,
            KEYSTORE_VARIABLE: str(Path(keystore).expanduser().resolve())}


def is_keystore(keystore: Path) -> bool:
    keystore = Path(keystore)
    return all(path.is_file() for path in (
        keystore / PUBLIC / IDENTITY_CA_CERT, keystore / PUBLIC / PERMISSIONS_CA_CERT,
        keystore / PRIVATE / IDENTITY_CA_KEY, keystore / PRIVATE / PERMISSIONS_CA_KEY,
        keystore / ENCLAVES / "governance.p7s"))


def check_keystore(keystore, enclaves=()) -> Path:
    """The keystore's path if it holds every file a node in each of `enclaves` reads; KeystoreError
    (one line, with the command that makes what is missing) otherwise. The private keys are not
    needed to run nodes: a robot may hold a keystore without private/."""
    keystore = Path(keystore).expanduser()
    fix = f"make it with: spec-vla-keystore {keystore}"
    if not keystore.is_dir():
        raise KeystoreError(f"keystore {keystore} does not exist; {fix}")
    if not (keystore / ENCLAVES / "governance.p7s").is_file():
        raise KeystoreError(f"{keystore} is not an SROS2 keystore (no {ENCLAVES}/governance.p7s); {fix}")
    for enclave in enclaves:
        directory = enclave_dir(keystore, enclave)
        if not directory.is_dir():
            raise KeystoreError(f"keystore {keystore} has no enclave {enclave}; {fix}")
        missing = [name for name in ENCLAVE_FILES if not (directory / name).is_file()]
        if missing:
            raise KeystoreError(f"keystore {keystore} has no complete enclave {enclave} (missing "
                                f"{', '.join(missing)} in {directory}); {fix}")
    return keystore


def create_keystore(keystore, domain_id: int | None = None) -> Path:
    """Make a keystore at `keystore`: CA, links, signed governance. An existing keystore is kept as
    it is (its CA keeps admitting the enclaves it issued); a non-empty directory that is not a
    keystore is refused."""
    keystore = Path(keystore).expanduser()
    if is_keystore(keystore):
        return keystore
    if keystore.exists() and (not keystore.is_dir() or any(keystore.iterdir())):
        raise KeystoreError(f"{keystore} exists and is not an SROS2 keystore; give a new or empty directory")
    check_domain_id(domain_id)
    for directory in (keystore / PUBLIC, keystore / ENCLAVES):
        directory.mkdir(parents=True, exist_ok=True)
    (keystore / PRIVATE).mkdir(mode=0o700, parents=True, exist_ok=True)

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate(name, name, ca_key.public_key(), ca_key, ca=True)
    _write_key(ca_key, keystore / PRIVATE / CA_KEY)
    (keystore / PUBLIC / CA_CERT).write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    # One CA for identities and permissions, as SROS2 makes it.
    for link in (IDENTITY_CA_CERT, PERMISSIONS_CA_CERT):
        _link(keystore / PUBLIC / link, keystore / PUBLIC / CA_CERT)
    for link in (IDENTITY_CA_KEY, PERMISSIONS_CA_KEY):
        _link(keystore / PRIVATE / link, keystore / PRIVATE / CA_KEY)

    governance = keystore / ENCLAVES / f"{GOVERNANCE}.xml"
    governance.write_bytes(governance_xml(domain_id))
    _sign_file(keystore, governance)
    return keystore


def create_enclave(keystore, enclave: str, domain_id: int | None = None) -> Path:
    """Make (or complete) the enclave `enclave` in `keystore`: identity certificate CN=<enclave>
    issued by the keystore's CA, links to the CA certificates and governance, signed permissions.
    An existing identity is kept. Returns the enclave's directory."""
    keystore = Path(keystore).expanduser()
    if not is_keystore(keystore):
        raise KeystoreError(f"{keystore} is not an SROS2 keystore with its private CA key; make it with "
                            f"spec-vla-keystore {keystore}")
    check_domain_id(domain_id)
    directory = enclave_dir(keystore, enclave)
    directory.mkdir(parents=True, exist_ok=True)
    for name, target in ((IDENTITY_CA_CERT, keystore / PUBLIC / IDENTITY_CA_CERT),
                         (PERMISSIONS_CA_CERT, keystore / PUBLIC / PERMISSIONS_CA_CERT),
                         ("governance.p7s", keystore / ENCLAVES / "governance.p7s")):
        _link(directory / name, target)

    ca_cert = x509.load_pem_x509_certificate((keystore / PUBLIC / IDENTITY_CA_CERT).read_bytes())
    ca_key = serialization.load_pem_private_key((keystore / PRIVATE / IDENTITY_CA_KEY).read_bytes(), None)
    if not ((directory / "cert.pem").is_file() and (directory / "key.pem").is_file()):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, enclave)])
        cert = _certificate(subject, ca_cert.subject, key.public_key(), ca_key, ca=False)
        _write_key(key, directory / "key.pem")
        (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    cert = x509.load_pem_x509_certificate((directory / "cert.pem").read_bytes())

    permissions = directory / f"{PERMISSIONS}.xml"
    permissions.write_bytes(permissions_xml(cert.subject.rfc4514_string(), enclave, domain_id,
                                            cert.not_valid_before_utc, cert.not_valid_after_utc))
    _sign_file(keystore, permissions)
    return directory


def check_domain_id(domain_id: int | None) -> None:
    if domain_id is not None and not ROS_DOMAIN_IDS[0] <= domain_id <= ROS_DOMAIN_IDS[1]:
        raise KeystoreError(f"domain id {domain_id}: expected {ROS_DOMAIN_IDS[0]}-{ROS_DOMAIN_IDS[1]}")


def governance_xml(domain_id: int | None = None) -> bytes:
    """The governance document as SROS2 writes it (its default policy), for `domain_id` or all."""
    dds = _dds_element("governance")
    domain_rule = _sub(_sub(dds, "domain_access_rules"), "domain_rule")
    _domains(_sub(domain_rule, "domains"), domain_id)
    for tag, text in (("allow_unauthenticated_participants", "false"), ("enable_join_access_control", "true"),
                      ("discovery_protection_kind", "ENCRYPT"), ("liveliness_protection_kind", "ENCRYPT"),
                      ("rtps_protection_kind", "ENCRYPT")):
        _sub(domain_rule, tag, text)
    topic_rule = _sub(_sub(domain_rule, "topic_access_rules"), "topic_rule")
    for tag, text in (("topic_expression", "*"), ("enable_discovery_protection", "true"),
                      ("enable_liveliness_protection", "true"), ("enable_read_access_control", "true"),
                      ("enable_write_access_control", "true"), ("metadata_protection_kind", "ENCRYPT"),
                      ("data_protection_kind", "ENCRYPT")):
        _sub(topic_rule, tag, text)
    return _serialize(dds)


def permissions_xml(subject_name: str, enclave: str, domain_id: int | None, not_before: datetime.datetime,
                    not_after: datetime.datetime) -> bytes:
    """The permissions document of one enclave: a grant for its certificate's subject, valid as
    long as the certificate, allowing every ROS topic and service, denying the rest."""
    dds = _dds_element("permissions")
    grant = _sub(_sub(dds, "permissions"), "grant", name=enclave)
    _sub(grant, "subject_name", subject_name)
    validity = _sub(grant, "validity")
    _sub(validity, "not_before", not_before.strftime("%Y-%m-%dT%H:%M:%S"))
    _sub(validity, "not_after", not_after.strftime("%Y-%m-%dT%H:%M:%S"))
    allow = _sub(grant, "allow_rule")
    _domains(_sub(allow, "domains"), domain_id)
    for direction in ("publish", "subscribe"):
        topics = _sub(_sub(allow, direction), "topics")
        for topic in ALL_ROS_TOPICS:
            _sub(topics, "topic", topic)
    _sub(grant, "default", "DENY")
    return _serialize(dds)


def _dds_element(document: str) -> ElementTree.Element:
    ElementTree.register_namespace("xsi", _XSI)
    return ElementTree.Element("dds", {f"{{{_XSI}}}noNamespaceSchemaLocation": _OMG_SCHEMA.format(document)})


def _sub(parent, tag: str, text: str | None = None, **attributes) -> ElementTree.Element:
    element = ElementTree.SubElement(parent, tag, attributes)
    element.text = text
    return element


def _domains(element, domain_id: int | None):
    if domain_id is None:
        id_range = _sub(element, "id_range")
        _sub(id_range, "min", str(ROS_DOMAIN_IDS[0]))
        _sub(id_range, "max", str(ROS_DOMAIN_IDS[1]))
    else:
        _sub(element, "id", str(domain_id))
    return element


def _serialize(element) -> bytes:
    ElementTree.indent(element, space="  ")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(element, encoding="utf-8") + b"\n"


def _certificate(subject: x509.Name, issuer: x509.Name, public_key, signing_key, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(subject).issuer_name(issuer).public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))   # hosts' clocks differ a little
               .not_valid_after(now + VALIDITY)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=1 if ca else None), critical=ca))
    return builder.sign(signing_key, hashes.SHA256())


def _write_key(key, path: Path) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def _link(link: Path, target: Path) -> None:
    """A relative symbolic link, as SROS2 makes them (the keystore can be moved as a whole)."""
    if link.is_symlink() or link.exists():
        if link.resolve() == target.resolve():
            return
        link.unlink()
    link.symlink_to(os.path.relpath(target, link.parent))


def _sign_file(keystore: Path, document: Path) -> Path:
    """document.p7s beside `document`: S/MIME, detached, text mode, SHA-256, signed by the
    keystore's permissions CA (what DDS-Security asks, what SROS2 writes)."""
    cert = x509.load_pem_x509_certificate((keystore / PUBLIC / PERMISSIONS_CA_CERT).read_bytes())
    key = serialization.load_pem_private_key((keystore / PRIVATE / PERMISSIONS_CA_KEY).read_bytes(), None)
    signed = (pkcs7.PKCS7SignatureBuilder().set_data(document.read_bytes())
              .add_signer(cert, key, hashes.SHA256())
              .sign(serialization.Encoding.SMIME, [pkcs7.PKCS7Options.Text, pkcs7.PKCS7Options.DetachedSignature]))
    target = document.with_suffix(".p7s")
    target.write_bytes(signed)
    return target


def probe(keystore, enclave: str, domain_id: int | None = None) -> str | None:
    """Start an rclpy node in `enclave` of `keystore`, under Enforce, in a child process (on
    `domain_id`, default this process's ROS domain): None if it starts, else why not in one line
    (e.g. NO_SECURITY_PLUGINS with the pip wheels' Fast DDS). What every node of the package does
    first when secured."""
    environment = {**os.environ, **security_environment(keystore)}
    if domain_id is not None:
        environment["ROS_DOMAIN_ID"] = str(domain_id)
    code = ("import rclpy; rclpy.init(); rclpy.create_node('spec_vla_security_probe').destroy_node(); "
            "rclpy.shutdown()")
    try:
        result = subprocess.run([sys.executable, "-c", code, "--ros-args", "--enclave", enclave],
                                env=environment, stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"a secured node did not start within {PROBE_TIMEOUT_S} s"
    if result.returncode == 0:
        return None
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    # rclpy's exception: "rclpy._rclpy_pybind11.RCLError: <why>, at <source>:<line>, at ..."
    start = next((i for i, line in enumerate(lines) if "Error:" in line and not line.startswith(" ")), len(lines) - 1)
    message = one_line(" ".join(lines[start:]) if lines else f"exit code {result.returncode}")
    return message.split(": ", 1)[-1].split(", at /")[0]
