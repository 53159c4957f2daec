"""`spec-vla-keystore DIR`: an SROS2 keystore with one enclave per node of the package, for running
the nodes under ROS 2 security (`ros2 launch spec_vla_ros ... keystore:=DIR`, `spec-vla-launch ...
keystore:=DIR`).

Makes the keystore's CA and signed governance when DIR is new or empty, then the enclaves
/spec_vla_ros/<node> of every node the launch configurations start, and those named by --enclave
(a camera driver, an operator's `ros2 param` console: anything else that must talk to the nodes).
Running it again on the same DIR keeps the CA and the identities already made, so enclaves can be
added later. Layout and policy: spec_vla_ros/ros/security.py. Then it checks that this ROS
installation can start a secured node at all (the Fast DDS of the pip wheels cannot: it is built
without the DDS Security plugins) and says so.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ..errors import one_line
from ..ros import security
from ..ros.launch_config import CONFIGURATIONS

PROG = "spec-vla-keystore"
EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def package_enclaves() -> list[str]:
    """The enclave of every node any launch configuration starts, in the configurations' order."""
    names = dict.fromkeys(spec.name for configuration in CONFIGURATIONS.values() for spec in configuration.nodes)
    return [security.node_enclave(name) for name in names]


def domain_id(text: str) -> int:
    try:
        value = int(text)
        security.check_domain_id(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            str(error) if isinstance(error, security.KeystoreError) else f"'{text}' is not an integer") from None
    return value


def enclave_name(text: str) -> str:
    try:
        return security.check_enclave_name(text)
    except security.KeystoreError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv=None) -> int:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("keystore", type=Path, metavar="DIR", help="keystore directory (new, empty, or a keystore)")
    parser.add_argument("--enclave", type=enclave_name, action="append", default=[], metavar="NAME",
                        help="another enclave to make, e.g. /spec_vla_ros/camera_driver (repeatable)")
    parser.add_argument("--domain-id", type=domain_id, metavar="N",
                        help="admit participants on ROS domain N only (default: every domain, 0-232)")
    parser.add_argument("--no-check", action="store_true",
                        help="do not try a secured node with this ROS installation afterwards")
    args = parser.parse_args(argv)

    enclaves = list(dict.fromkeys(package_enclaves() + args.enclave))
    try:
        keystore = security.create_keystore(args.keystore, args.domain_id)
        for enclave in enclaves:
            security.create_enclave(keystore, enclave, args.domain_id)
    except (security.KeystoreError, OSError) as error:
        print(f"{PROG}: error: {one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    path = keystore.resolve()
    print(f"keystore {path}: enclaves {', '.join(enclaves)}")
    print(f"run the nodes secured: ros2 launch spec_vla_ros libero_goal.launch.py keystore:={shlex.quote(str(path))}"
          f" (or spec-vla-launch libero_goal keystore:=...)")
    exports = " ".join(f"{name}={shlex.quote(value)}" for name, value in security.security_environment(path).items())
    print(f"any other process talking to them: export {exports}; <command> --ros-args --enclave <one of the above>")
    print(f"{path / security.PRIVATE} holds the CA's key: whoever has it can admit anyone; keep it off the robot")
    if not args.no_check:
        reason = security.probe(path, enclaves[0])
        if reason is not None:
            print(f"{PROG}: warning: this ROS installation cannot start a secured node: {reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
