"""What a node's parameter table is made of, and the recorder's table. No ROS here.

Each node declares exactly the parameters of its table (rclpy infers a parameter's type from its
default); launch configurations, parameters files and tests are checked against the same tables:
spec_vla_ros.ros.policy_parameters (the policy node), sim_bridge.bridge_parameters (the LIBERO bridge)
and RECORDER_PARAMETERS below.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import topics


@dataclass(frozen=True)
class Parameter:
    name: str
    default: object        # also fixes the type: rclpy refuses a value of another type
    description: str       # shown by `ros2 param describe`
    read_only: bool = False   # True: set at start only (parameters file, -p, launch argument)

    @property
    def type(self) -> type:
        return type(self.default)


def parameter_table(*parameters: Parameter) -> dict[str, Parameter]:
    """name -> Parameter, in declaration order; ValueError for a name given twice."""
    table = {}
    for parameter in parameters:
        if parameter.name in table:
            raise ValueError(f"parameter '{parameter.name}' is defined twice")
        table[parameter.name] = parameter
    return table


def defaults(table: dict[str, Parameter]) -> dict:
    """name -> default value."""
    return {name: parameter.default for name, parameter in table.items()}


RECORDER_PARAMETERS = parameter_table(
    Parameter("topics", [topic.name for topic in topics.RECORDED],
              "topics to record; relative names resolve in the recorder's namespace", read_only=True),
    Parameter("output", "", "bag directory to create (must not exist); '' = bags/spec_vla_<date>_<time>",
              read_only=True),
)
