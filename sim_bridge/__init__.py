"""LIBERO-GOAL simulation for spec_vla_ros: the environment wrapper (no ROS), its results files,
the ROS 2 bridge node and the simulator benchmark."""
