"""LIBERO-GOAL simulation for spec_vla_ros: the environment wrapper (no ROS), its results files
and the ROS 2 bridge node (the simulator benchmark, `spec-vla-bench sim`, is
spec_vla_ros/benchmarks/sim.py)."""
