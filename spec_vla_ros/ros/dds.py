"""DDS settings that let camera frames of robot size (640x480 to 1920x1080 rgb8, 0.9-6 MB) arrive.

Fast DDS (ROS 2's default middleware) sends user data over UDP and shared memory by default. A
large frame becomes hundreds of UDP fragments: on one host most 640x480 and all 1280x720 frames
were lost, across hosts even 256x256 frames were (receive-buffer overruns). Fast DDS's LARGE_DATA
builtin transports (UDP for discovery only; TCP and shared memory for data) deliver them. The
launch files and the pip-only runner set `FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA` for their nodes,
unless the user configured Fast DDS's transports already (the variable itself, or an XML profiles
file). Other middlewares ignore the variable. Numbers: README, "DDS and large frames".

Every process that talks to the nodes must use the same setting: measured with this Fast DDS
(3.2), a LARGE_DATA participant and one with the default transports do not even discover each
other (no node, no topic in the other's graph). So export the variable in the camera driver's,
rviz's and the ros2 command line's shells too (and restart the ros2 daemon: `ros2 daemon stop`).

`ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST` defeats it: rmw_fastrtps then installs transports of its
own (shared memory and localhost UDP) in place of the builtin ones, and frames of 640x480 and more
are lost again (measured). The demo keeps LOCALHOST (its 256x256 frames arrive); a robot must not.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

BUILTIN_TRANSPORTS = "FASTDDS_BUILTIN_TRANSPORTS"
LARGE_DATA = "LARGE_DATA"
# A profiles file may define transports of its own; then the user's file decides.
PROFILES_FILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
DISCOVERY_RANGE = "ROS_AUTOMATIC_DISCOVERY_RANGE"
NO_FRAME_HINT = (f"frames of 640x480 and more are lost with Fast DDS's default transports: start every process "
                 f"that exchanges camera frames with {BUILTIN_TRANSPORTS}={LARGE_DATA} (the launch files and "
                 f"spec-vla-launch set it for their nodes) and without {DISCOVERY_RANGE}=LOCALHOST (which "
                 f"replaces those transports); see the README, 'DDS and large frames'")


def no_publisher_hint(environ: Mapping[str, str] | None = None) -> str:
    """Why a camera driver that runs may still be invisible to a node: domain and transports."""
    environ = os.environ if environ is None else environ
    return (f"check that the camera driver runs with ROS_DOMAIN_ID={environ.get('ROS_DOMAIN_ID') or '0 (unset)'} and "
            f"{BUILTIN_TRANSPORTS}={environ.get(BUILTIN_TRANSPORTS) or '(unset)'} as this node does: participants "
            f"with different builtin transports do not discover each other")


def dds_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables to add to `environ` (default: this process's) for large frames: empty when the
    user set FASTDDS_BUILTIN_TRANSPORTS or a Fast DDS profiles file themselves."""
    environ = os.environ if environ is None else environ
    if environ.get(BUILTIN_TRANSPORTS) or any(environ.get(name) for name in PROFILES_FILE_VARIABLES):
        return {}
    return {BUILTIN_TRANSPORTS: LARGE_DATA}


def describe(environ: Mapping[str, str] | None = None) -> str:
    """One line for logs: which DDS transports the nodes get, and why."""
    environ = os.environ if environ is None else environ
    caveat = (f"; with {DISCOVERY_RANGE}=LOCALHOST rmw_fastrtps replaces the builtin transports: frames of "
              f"640x480 and more may be lost" if environ.get(DISCOVERY_RANGE) == "LOCALHOST" else "")
    if dds_environment(environ):
        return f"DDS: {BUILTIN_TRANSPORTS}={LARGE_DATA} for camera frames of robot size (set it yourself to " \
               f"override); processes started elsewhere (camera driver, rviz, ros2 CLI) need it too to see " \
               f"the nodes{caveat}"
    if environ.get(BUILTIN_TRANSPORTS):
        return f"DDS: {BUILTIN_TRANSPORTS}={environ[BUILTIN_TRANSPORTS]} (yours){caveat}"
    profiles = next(environ[name] for name in PROFILES_FILE_VARIABLES if environ.get(name))
    return f"DDS: your Fast DDS profiles file {profiles} decides the transports{caveat}"
