"""spec_vla_ros: OpenVLA with speculative decoding, served over ROS 2."""
