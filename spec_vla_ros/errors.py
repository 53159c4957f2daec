"""How the package writes an error for a person: one line (ROS logs, command lines, refusals)."""


def one_line(message) -> str:
    """A message or exception's text on one line (rcl and rclpy messages may span several)."""
    return " ".join(str(message).split()) or type(message).__name__
