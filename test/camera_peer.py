"""A camera driver as a separate process, for the shutdown tests: publishes the instruction and
640x480 rgb8 frames at 10 Hz on the package's topics until it is killed (the test SIGKILLs it:
a TCP peer that vanishes without a goodbye)."""
import sys
import time

import numpy as np
import rclpy
from sensor_msgs.msg import Image
from std_msgs.msg import String

from spec_vla_ros.ros import topics
from spec_vla_ros.ros.conversions import image_to_msg


def main() -> None:
    rclpy.init()
    node = rclpy.create_node("camera_peer")
    camera = node.create_publisher(Image, topics.CAMERA.name, topics.CAMERA.qos_profile())
    instruction = node.create_publisher(String, topics.INSTRUCTION.name, topics.INSTRUCTION.qos_profile())
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    print("publishing", flush=True)
    while True:
        msg = image_to_msg(frame, stamp=node.get_clock().now().to_msg())
        camera.publish(msg)
        instruction.publish(String(data="put the bowl on the plate"))
        rclpy.spin_once(node, timeout_sec=0.1)
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
