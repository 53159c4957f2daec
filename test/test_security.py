"""ROS 2 security (SROS2): the keystore `spec-vla-keystore` makes, the `keystore:=` launch argument,
and the real policy node run with it.

The keystore is checked with tools that do not share our code: openssl verifies the certificate
chains and the S/MIME signatures as DDS-Security's plugins do (a changed byte or another CA fails).
Whether a participant without the keystore's certificates can reach a secured node needs a DDS with
the DDS-Security plugins; the Fast DDS of the pip wheels is built without them (SECURITY=OFF:
rmw_fastrtps says "This Fast DDS version doesn't have the security libraries"). Where they are
missing, the test that needs them is skipped with the probe's own message and the policy node is
shown to fail closed instead: with a keystore it does not start at all, rather than start open.
"""
import datetime
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from xml.etree import ElementTree

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from spec_vla_ros.commands.keystore import main as keystore_command
from spec_vla_ros.ros import security
from spec_vla_ros.ros.launch_config import CONFIGURATIONS, resolve
from spec_vla_ros.ros.launcher import node_command

OPERATOR = "/spec_vla_ros/test_operator"       # an extra enclave: the test's own client, as a user's console
PACKAGE_NODES = {spec.name for configuration in CONFIGURATIONS.values() for spec in configuration.nodes}
OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")


def make_keystore(directory: Path, *options: str) -> Path:
    assert keystore_command([str(directory), "--no-check", *options]) == 0
    return directory


def openssl(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([OPENSSL, *arguments], cwd=cwd, capture_output=True, text=True)


def enclaves_of(keystore: Path) -> list[Path]:
    return sorted(path.parent for path in (keystore / security.ENCLAVES).rglob("cert.pem"))


@pytest.fixture(scope="module")
def keystore(tmp_path_factory) -> Path:
    return make_keystore(tmp_path_factory.mktemp("security") / "keystore", "--enclave", OPERATOR)


# --- the keystore -----------------------------------------------------------------------------------

def test_the_command_makes_an_enclave_per_package_node_in_sros2_layout(keystore):
    for name in ("ca.cert.pem", "identity_ca.cert.pem", "permissions_ca.cert.pem"):
        assert (keystore / "public" / name).resolve() == (keystore / "public" / "ca.cert.pem").resolve()
    for name in ("ca.key.pem", "identity_ca.key.pem", "permissions_ca.key.pem"):
        assert (keystore / "private" / name).resolve() == (keystore / "private" / "ca.key.pem").resolve()
    assert os.stat(keystore / "private" / "ca.key.pem").st_mode & 0o077 == 0      # the CA key: owner only
    expected = {f"/spec_vla_ros/{name}" for name in PACKAGE_NODES} | {OPERATOR}
    assert {f"/{path.relative_to(keystore / 'enclaves')}" for path in enclaves_of(keystore)} == expected
    for directory in enclaves_of(keystore):
        for name in ("cert.pem", "key.pem", "governance.p7s", "permissions.p7s", "identity_ca.cert.pem",
                     "permissions_ca.cert.pem"):
            assert (directory / name).is_file(), directory / name
        assert (directory / "governance.p7s").resolve() == (keystore / "enclaves" / "governance.p7s").resolve()
        assert os.stat(directory / "key.pem").st_mode & 0o077 == 0
    # What a node run with keystore:= needs is there (and the launch check agrees).
    security.check_keystore(keystore, sorted(expected))


def test_every_identity_chains_to_the_keystore_ca(keystore):
    ca = x509.load_pem_x509_certificate((keystore / "public" / "ca.cert.pem").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for directory in enclaves_of(keystore):
        enclave = f"/{directory.relative_to(keystore / 'enclaves')}"
        cert = x509.load_pem_x509_certificate((directory / "cert.pem").read_bytes())
        key = serialization.load_pem_private_key((directory / "key.pem").read_bytes(), None)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == enclave
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert key.public_key() == cert.public_key()
        cert.verify_directly_issued_by(ca)                  # raises if the CA did not sign it
        if OPENSSL is None:
            continue
        verified = openssl("verify", "-CAfile", "identity_ca.cert.pem", "cert.pem", cwd=directory)
        assert verified.returncode == 0 and "cert.pem: OK" in verified.stdout, verified.stderr


@needs_openssl
def test_the_signed_policies_verify_and_a_changed_byte_or_another_ca_does_not(keystore, tmp_path):
    signed = [keystore / "enclaves" / "governance.p7s"] + [path / "permissions.p7s" for path in enclaves_of(keystore)]
    for path in signed:
        result = openssl("smime", "-verify", "-text", "-in", str(path), "-CAfile",
                         str(keystore / "public" / "permissions_ca.cert.pem"), cwd=tmp_path)
        assert result.returncode == 0, f"{path}: {result.stderr}"
        # The signed content (text/plain) is the XML beside it, apart from S/MIME's CRLF line ends.
        assert result.stdout.replace("\r\n", "\n") == path.with_suffix(".xml").read_text()
    tampered = tmp_path / "tampered.p7s"
    tampered.write_text(signed[1].read_text().replace("<default>DENY</default>", "<default>ALLOW</default>"))
    assert "<default>ALLOW</default>" in tampered.read_text()
    assert openssl("smime", "-verify", "-in", str(tampered), "-CAfile",
                   str(keystore / "public" / "permissions_ca.cert.pem"), cwd=tmp_path).returncode != 0
    other = make_keystore(tmp_path / "other")
    assert openssl("smime", "-verify", "-in", str(signed[0]), "-CAfile",
                   str(other / "public" / "permissions_ca.cert.pem"), cwd=tmp_path).returncode != 0
    assert openssl("verify", "-CAfile", str(other / "public" / "identity_ca.cert.pem"),
                   str(enclaves_of(keystore)[0] / "cert.pem"), cwd=tmp_path).returncode != 0


def test_governance_admits_only_authenticated_participants_and_grants_name_each_identity(tmp_path):
    domain = int.from_bytes(os.urandom(1), "little") % 233
    keystore = make_keystore(tmp_path / "keystore", "--domain-id", str(domain))
    rule = ElementTree.parse(keystore / "enclaves" / "governance.xml").find("domain_access_rules/domain_rule")
    assert [element.text for element in rule.findall("domains/id")] == [str(domain)]
    assert rule.findtext("allow_unauthenticated_participants") == "false"
    assert rule.findtext("enable_join_access_control") == "true"
    topic_rule = rule.find("topic_access_rules/topic_rule")
    assert topic_rule.findtext("topic_expression") == "*"
    assert topic_rule.findtext("enable_read_access_control") == topic_rule.findtext(
        "enable_write_access_control") == "true"
    for directory in enclaves_of(keystore):
        cert = x509.load_pem_x509_certificate((directory / "cert.pem").read_bytes())
        [grant] = ElementTree.parse(directory / "permissions.xml").findall("permissions/grant")
        assert grant.findtext("subject_name") == cert.subject.rfc4514_string()
        assert grant.get("name") == f"/{directory.relative_to(keystore / 'enclaves')}"
        not_before, not_after = (datetime.datetime.fromisoformat(grant.findtext(f"validity/{name}")).replace(
            tzinfo=datetime.timezone.utc) for name in ("not_before", "not_after"))
        assert cert.not_valid_before_utc <= not_before < datetime.datetime.now(datetime.timezone.utc) < not_after
        assert not_after <= cert.not_valid_after_utc
        assert [element.text for element in grant.findall("allow_rule/domains/id")] == [str(domain)]
        for direction in ("publish", "subscribe"):
            assert {topic.text for topic in grant.findall(f"allow_rule/{direction}/topics/topic")} == \
                {"rt/*", "rq/*", "rr/*"}
        assert grant.findtext("default") == "DENY"
    # Without --domain-id: every ROS domain.
    every = make_keystore(tmp_path / "every")
    domains = ElementTree.parse(every / "enclaves" / "governance.xml").find(
        "domain_access_rules/domain_rule/domains/id_range")
    assert (domains.findtext("min"), domains.findtext("max")) == ("0", "232")


def test_running_the_command_again_keeps_the_ca_and_identities_and_adds_enclaves(tmp_path):
    keystore = make_keystore(tmp_path / "keystore")
    policy = keystore / "enclaves" / "spec_vla_ros" / "spec_vla_policy"
    before = {path: path.read_bytes() for path in (keystore / "public" / "ca.cert.pem", keystore / "private" /
                                                   "ca.key.pem", policy / "cert.pem", policy / "key.pem")}
    assert not (keystore / "enclaves" / "spec_vla_ros" / "camera_driver").exists()
    make_keystore(keystore, "--enclave", "/spec_vla_ros/camera_driver")
    assert {path: path.read_bytes() for path in before} == before
    security.check_keystore(keystore, ["/spec_vla_ros/camera_driver"])


@pytest.mark.parametrize("arguments, expected", [
    (["--enclave", "relative/name"], "enclave 'relative/name': expected an absolute ROS name"),
    (["--enclave", "/spec_vla_ros/bad-name"], "enclave '/spec_vla_ros/bad-name'"),
    (["--domain-id", "233"], "domain id 233: expected 0-232"),
    (["--domain-id", "x"], "'x' is not an integer"),
    (["NOT_A_KEYSTORE"], "is not an SROS2 keystore; give a new or empty directory"),
])
def test_the_command_refuses_bad_input_in_one_line(tmp_path, capsys, arguments, expected):
    (tmp_path / "NOT_A_KEYSTORE").mkdir()
    (tmp_path / "NOT_A_KEYSTORE" / "notes.txt").write_text("mine")
    directory, options = (arguments[0], []) if arguments == ["NOT_A_KEYSTORE"] else ("keystore", arguments)
    try:
        code = keystore_command([str(tmp_path / directory), "--no-check", *options])
    except SystemExit as exit:               # argparse's refusals
        code = exit.code
    assert code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("spec-vla-keystore: error: ") and expected in error
    assert (tmp_path / "NOT_A_KEYSTORE" / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "keystore").exists()


# --- keystore:= in the launch configurations ---------------------------------------------------------

@pytest.mark.parametrize("configuration", sorted(CONFIGURATIONS))
def test_the_keystore_argument_runs_every_node_in_its_enclave(keystore, configuration):
    arguments = {"record": "true"} if configuration == "libero_goal" else {}
    for node in resolve(configuration, arguments):
        assert node.enclave == "" and node.environment == {} and "--enclave" not in node_command(node)
    nodes = resolve(configuration, {**arguments, "keystore": str(keystore)})
    assert {node.name for node in nodes} == {spec.name for spec in CONFIGURATIONS[configuration].nodes}
    for node in nodes:
        assert node.enclave == f"/spec_vla_ros/{node.name}"
        assert node_command(node)[-2:] == ["--enclave", node.enclave]
        assert node.environment == {"ROS_SECURITY_ENABLE": "true", "ROS_SECURITY_STRATEGY": "Enforce",
                                    "ROS_SECURITY_KEYSTORE": str(keystore.resolve())}


def test_a_keystore_without_a_node_enclave_is_refused_before_anything_starts(tmp_path):
    keystore = make_keystore(tmp_path / "keystore")
    shutil.rmtree(keystore / "enclaves" / "spec_vla_ros" / "libero_goal_bridge")
    with pytest.raises(ValueError, match="has no enclave /spec_vla_ros/libero_goal_bridge; make it with: "
                                         "spec-vla-keystore"):
        resolve("libero_goal", {"keystore": str(keystore)})
    (keystore / "enclaves" / "spec_vla_ros" / "spec_vla_policy" / "permissions.p7s").unlink()
    with pytest.raises(ValueError, match="no complete enclave /spec_vla_ros/spec_vla_policy .missing permissions.p7s"):
        resolve("hardware", {"keystore": str(keystore)})
    with pytest.raises(ValueError, match="does not exist"):
        resolve("hardware", {"keystore": str(tmp_path / "nowhere")})


# --- secured nodes over DDS --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dds_security(keystore):
    """None if this ROS installation starts a node in the keystore's enclave; else the reason it does
    not, which must be the missing DDS-Security plugins (anything else is a broken keystore)."""
    pytest.importorskip("rclpy", reason="rclpy is not installed")
    from ros_helpers import domain_id
    reason = security.probe(keystore, OPERATOR, domain_id=domain_id())
    assert reason is None or security.NO_SECURITY_PLUGINS in reason, reason
    return reason


def start_node(node, log_path: Path) -> subprocess.Popen:
    """A resolved node as the launcher starts it (its security variables on top), on the test's domain."""
    from ros_helpers import REPO_ROOT, ros_environment
    with log_path.open("w") as log:
        return subprocess.Popen(node_command(node), cwd=REPO_ROOT, env=ros_environment(**node.environment),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


def stop_node(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def secured_policy(keystore):
    [policy] = [node for node in resolve("libero_goal", {"keystore": str(keystore)}) if node.name == "spec_vla_policy"]
    return policy


@pytest.mark.ros
def test_without_dds_security_the_secured_policy_node_does_not_start_at_all(keystore, dds_security, tmp_path):
    """Fail closed: with keystore:= and a DDS that cannot secure it, the real policy node exits with
    the middleware's reason and is never on the domain for anyone (it does not fall back to open)."""
    if dds_security is None:
        pytest.skip("this installation's DDS has the security plugins: the next test covers secured nodes")
    from ros_helpers import Client
    observer = Client("unsecured_observer")          # no security variables: what anyone on the domain is
    process = start_node(secured_policy(keystore), tmp_path / "policy.log")
    try:
        deadline = time.monotonic() + 180                # the node imports torch before it creates itself
        while process.poll() is None and time.monotonic() < deadline:
            observer.spin_for(0.5)
            assert "spec_vla_policy" not in observer.node.get_node_names()
        log = (tmp_path / "policy.log").read_text()
        assert process.poll() not in (None, 0), log[-3000:]
        assert security.NO_SECURITY_PLUGINS in log, log[-3000:]
        observer.spin_for(1.0)
        assert "spec_vla_policy" not in observer.node.get_node_names()
        assert not observer.node.get_publishers_info_by_topic("/decode_stats")
    finally:
        stop_node(process)
        observer.close()


@pytest.mark.ros
def test_only_holders_of_an_enclave_reach_the_secured_policy_node(keystore, dds_security, tmp_path, monkeypatch):
    """The real policy node with keystore:=: a participant without the keystore's certificates can
    neither make it act (frames and instructions) nor change a parameter; the operator's enclave can."""
    if dds_security is not None:
        pytest.skip(f"this installation's DDS cannot run secured nodes ({dds_security}); the pip wheels' "
                    f"Fast DDS is built without the DDS-Security plugins (README, 'Security (SROS2)')")
    from rcl_interfaces.srv import GetParameters, SetParameters
    from rclpy.parameter import Parameter
    from std_msgs.msg import String
    from ros_helpers import Client
    from spec_vla_ros.ros import topics
    from spec_vla_ros.ros.conversions import image_to_msg
    import numpy as np

    policy = secured_policy(keystore)
    process = start_node(policy, tmp_path / "policy.log")
    # rcl reads the security variables when a context is initialised: one secured client, one not.
    for name, value in {**policy.environment, "ROS_SECURITY_ENCLAVE_OVERRIDE": OPERATOR}.items():
        monkeypatch.setenv(name, value)
    operator = Client("operator")
    for name in (*policy.environment, "ROS_SECURITY_ENCLAVE_OVERRIDE"):
        monkeypatch.delenv(name)
    outsider = Client("outsider")
    try:
        stats = operator.collect_stats()
        image = np.random.default_rng().integers(0, 256, (256, 256, 3), dtype=np.uint8)

        def send(client, camera, instruction, text):
            msg = image_to_msg(image)
            msg.header.stamp = client.node.get_clock().now().to_msg()
            instruction.publish(String(data=text))
            camera.publish(msg)

        publishers = {client: (client.node.create_publisher(topics.CAMERA.message_class(), topics.CAMERA.name, 10),
                               client.node.create_publisher(String, topics.INSTRUCTION.name, 10))
                      for client in (operator, outsider)}
        # The operator's frames are acted on.
        deadline = time.monotonic() + 180
        while not stats:
            assert process.poll() is None, (tmp_path / "policy.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the operator's frames got no decode_stats"
            send(operator, *publishers[operator], "put the bowl on the plate")
            operator.spin_for(1.0)
        operator.spin_for(3.0)
        # The outsider's are not: it does not even see the node's subscriptions, and nothing answers.
        count = len(stats)
        for _ in range(10):
            send(outsider, *publishers[outsider], "open the top drawer of the cabinet")
            outsider.spin_for(0.5)
            operator.spin_for(0.5)
        assert publishers[outsider][0].get_subscription_count() == 0
        assert "spec_vla_policy" not in outsider.node.get_node_names()
        assert len(stats) == count, "the secured node acted on an unauthenticated participant's frames"

        def draft(client) -> str:
            return client._call(GetParameters, "/spec_vla_policy/get_parameters",
                                GetParameters.Request(names=["draft"])).values[0].string_value

        before = draft(operator)
        change = "history" if before != "history" else "llama"
        # The outsider's parameter request finds no service and changes nothing.
        service = outsider.node.create_client(SetParameters, "/spec_vla_policy/set_parameters")
        future = service.call_async(SetParameters.Request(
            parameters=[Parameter("draft", value=change).to_parameter_msg()]))
        outsider.spin_for(5.0)
        assert not service.service_is_ready() and not future.done()
        assert draft(operator) == before
        # The operator's does.
        assert operator.set_parameters("spec_vla_policy", draft=change)[0].successful
        assert draft(operator) == change
    finally:
        stop_node(process)
        operator.close()
        outsider.close()
