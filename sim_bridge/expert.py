"""A scripted LIBERO-GOAL expert that reads the simulator's privileged state.

It drives the same `LiberoGoalEnv` the package evaluates policies in and produces actions in the
convention that env takes from a policy (OpenVLA's: OSC_POSE deltas `dx dy dz droll dpitch dyaw`
in [-1, 1], where 1.0 asks the controller for 5 cm / 0.5 rad, and a gripper value in [0, 1],
1 = open). No ROS and no model stack: it lives on the simulator's side of the package and is what
the demonstrations (sim_bridge/demonstrations.py) are recorded from.

How it works. Each task is a short plan of waypoints for the grip site (the point between the
fingertips), built from the scene when the episode starts: "above the bowl's rim", "down onto the
rim", "close", "lift", "over the stove", ... A waypoint's target is a function of the live scene
(object and fixture poses, joint positions), so it follows what moves. The hand points down and
turns about z (the fingers close along world y at yaw 0); two plans also tilt it about x (drawers, the
rack). Position and orientation are P-controlled with a soft speed cap, so actions stay off the
controller's clip at +-1; an optional Gaussian noise is added to the executed pose (DART-style:
demonstrations keep the expert's clean action as the label, and the states the noisy execution
visits). An object that slips out of the hand is picked again (at most MAX_REGRASPS times).

What the plans rely on (measured on LIBERO's assets): the bowl is picked by its rim wall, the
fingers straddling the wall 4.7 cm from its centre at 3.8 cm above its base; the stove turns on when
its knob joint reaches 0.5 rad (the fingers close on the knob's ridge and twist the hand); a drawer
counts as open below -0.14 (the hand, turned to point at the cabinet, closes on the handle bar from the
front: from above, a finger does not fit between bar and drawer); the plate is dragged with the closed
fingers inside its rim; the wine bottle is held by its neck (it is taller than the fingers are long)
and, for the rack, laid along the rack's slanted top board beside its post.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .constants import LIBERO_GOAL_INSTRUCTIONS, LIBERO_MAX_DELTA_POS_M, LIBERO_MAX_DELTA_ROT_RAD

MAX_REGRASPS = 2                        # an object that slips out of the hand is picked again at most this often
DROP_DISTANCE = 0.03                    # m the held object may shift in the hand before it counts as dropped
OPEN, CLOSED = 1.0, 0.0                 # OpenVLA's gripper convention (the env inverts it for LIBERO)
GRIP_SITE = "gripper0_grip_site"        # the point between the fingertips; robot0_eef_pos in observations
FINGER_JOINTS = ("gripper0_finger_joint1", "gripper0_finger_joint2")
# The hand pointing straight down at yaw 0 (grip site axes in world coordinates, as columns): the
# fingers close along world y.
HAND_DOWN = np.array([[0.0, 1.0, 0.0],
                      [1.0, 0.0, 0.0],
                      [0.0, 0.0, -1.0]])

# Scene objects of LIBERO-GOAL (names as the BDDL files give them).
BOWL, CREAM_CHEESE, WINE_BOTTLE, PLATE = "akita_black_bowl_1", "cream_cheese_1", "wine_bottle_1", "plate_1"
STOVE_KNOB_JOINT = "flat_stove_1_button"
STOVE_KNOB_GEOM = "flat_stove_1_g5"     # the knob's disc; its ridge runs along world x
DRAWER_JOINTS = {"top": "wooden_cabinet_1_top_level", "middle": "wooden_cabinet_1_middle_level"}
DRAWER_HANDLE_GEOMS = {"top": "wooden_cabinet_1_g18", "middle": "wooden_cabinet_1_g29"}  # the handle bars
DRAWER_OPEN_BELOW = -0.14               # joint position under which LIBERO counts a drawer open
STOVE_ON_FROM = 0.5                     # knob joint position from which LIBERO counts the stove on


@dataclass(frozen=True)
class ExpertSettings:
    """Controller gains and limits. Gains are in action units per unit of error: a position gain of
    1.0 asks the controller to close the whole error in one step (it moves ~1/4 of that)."""
    position_gain: float = 2.0
    yaw_gain: float = 1.5
    max_speed: float = 0.75              # soft cap on the norm of the position command (1.0 = the clip)
    max_turn: float = 0.6                # the same for the rotation command
    noise: float = 0.0                   # std of the Gaussian added to the executed pose command
    seed: int | None = None              # the noise's RNG seed

    def __post_init__(self):
        if not (self.position_gain > 0 and self.yaw_gain > 0):
            raise ValueError(f"gains must be > 0, got position {self.position_gain}, yaw {self.yaw_gain}")
        if not (0 < self.max_speed <= 1 and 0 < self.max_turn <= 1):
            raise ValueError(f"max_speed and max_turn must be in (0, 1], got {self.max_speed}, {self.max_turn}")
        if not self.noise >= 0:
            raise ValueError(f"noise must be >= 0 (a standard deviation in action units), got {self.noise}")


class Scene:
    """Privileged state of a running LIBERO env, read live (a hard reset replaces `env.sim`, so the
    simulator is looked up on every read)."""

    def __init__(self, libero_env):
        self._env = libero_env              # robosuite's env (LIBERO's `ControlEnv.env`)

    @property
    def sim(self):
        return self._env.sim

    def body_pos(self, name: str) -> np.ndarray:
        return self.sim.data.body_xpos[self._env.obj_body_id[name]].copy()

    def body_rot(self, name: str) -> np.ndarray:
        return self.sim.data.body_xmat[self._env.obj_body_id[name]].reshape(3, 3).copy()

    def site_pos(self, name: str) -> np.ndarray:
        return self.sim.data.get_site_xpos(name).copy()

    def geom_pos(self, name: str) -> np.ndarray:
        return self.sim.data.geom_xpos[self.sim.model.geom_name2id(name)].copy()

    def joint_pos(self, name: str) -> float:
        return float(self.sim.data.qpos[self.sim.model.get_joint_qpos_addr(name)])

    @property
    def eef_pos(self) -> np.ndarray:
        return self.sim.data.site_xpos[self.sim.model.site_name2id(GRIP_SITE)].copy()

    @property
    def eef_rot(self) -> np.ndarray:
        return self.sim.data.site_xmat[self.sim.model.site_name2id(GRIP_SITE)].reshape(3, 3).copy()

    @property
    def finger_opening(self) -> float:
        """Distance between the fingers (m): ~0.077 wide open, ~0.004 closed on nothing."""
        return float(sum(abs(self.joint_pos(joint)) for joint in FINGER_JOINTS))


Target = Callable[[Scene], np.ndarray]


@dataclass(frozen=True)
class Waypoint:
    """Drive the grip site to `target(scene)` (re-evaluated every step) at hand yaw `yaw` with the
    gripper commanded to `gripper`; done once within `tolerance` (m) and 0.05 rad of yaw and then
    `settle` more steps, or after `timeout` steps. `until(scene)`, when given, ends it early."""
    name: str
    target: Target
    gripper: float = OPEN
    yaw: float = 0.0
    tilt: float = 0.0
    tolerance: float = 0.01
    settle: int = 0
    timeout: int = 80
    speed: float = 1.0                  # fraction of the settings' max_speed
    turn: float = 1.0                   # fraction of the settings' max_turn (capped at the controller's 1.0)
    until: Callable[[Scene], bool] | None = None
    frozen: bool = False                # evaluate `target` once, when the waypoint starts
    holding: str | None = None          # the body that must stay in the hand; if it slips out, the plan
                                        # goes back to the last waypoint that starts a grasp
    starts_grasp: bool = False


@dataclass
class ExpertAction:
    label: np.ndarray                   # the expert's own action (what demonstrations record)
    executed: np.ndarray                # what is sent to the env (the label plus noise, if any)
    waypoint: str


def rotation_vector(rotation: np.ndarray) -> np.ndarray:
    """Axis * angle of a rotation matrix (angle in [0, pi])."""
    cos_angle = np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0)
    angle = np.arccos(cos_angle)
    if angle < 1e-6:
        return np.zeros(3)
    axis = np.array([rotation[2, 1] - rotation[1, 2], rotation[0, 2] - rotation[2, 0], rotation[1, 0] - rotation[0, 1]])
    norm = np.linalg.norm(axis)
    if norm < 1e-9:                     # angle ~ pi: the axis is the eigenvector of eigenvalue 1
        values, vectors = np.linalg.eigh((rotation + rotation.T) / 2.0)
        return vectors[:, np.argmax(values)] * angle
    return axis / norm * angle


def hand_rotation(yaw: float, tilt: float = 0.0) -> np.ndarray:
    """The downward hand turned by `yaw` about world z, then tilted by `tilt` about world x (at yaw 0,
    tilt -pi/2 points it along -y with the fingers closing along z)."""
    c, s = np.cos(yaw), np.sin(yaw)
    ct, st = np.cos(tilt), np.sin(tilt)
    return (np.array([[1.0, 0.0, 0.0], [0.0, ct, -st], [0.0, st, ct]]) @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
            @ HAND_DOWN)


def soft_cap(command: np.ndarray, limit: float) -> np.ndarray:
    """Scale a command vector so its norm is limit * tanh(norm / limit): linear for small commands,
    approaching `limit` for large ones (reaching it only in floating point)."""
    norm = np.linalg.norm(command)
    if norm < 1e-12:
        return command
    return command * (limit * np.tanh(norm / limit) / norm)


class ScriptedExpert:
    """Plans and acts for one LIBERO-GOAL task at a time.

    Use: `env.reset(task_id, episode)`, then `expert.start(task_id)`, then `expert.act()` before each
    `env.step(...)` until the env is done (or `expert.finished`: its plan ran out without success).
    """

    def __init__(self, env, settings: ExpertSettings = ExpertSettings()):
        self.env = env                  # a LiberoGoalEnv
        self.settings = settings
        self._rng = np.random.default_rng(settings.seed)
        self._plan: list[Waypoint] = []
        self._index = 0
        self._steps_in_waypoint = 0
        self._settled = 0
        self._frozen_target: np.ndarray | None = None
        self._grip: np.ndarray | None = None    # eef - held body, when a holding waypoint began
        self.regrasps = 0                       # grasps retried this episode
        self.scene: Scene | None = None

    @staticmethod
    def supports(task_id: int) -> bool:
        return task_id in PLANS

    def start(self, task_id: int) -> None:
        """Plan the task from the scene as the env's reset left it."""
        if task_id not in PLANS:
            raise ValueError(f"the scripted expert has no plan for task {task_id}; it has plans for "
                             f"tasks {sorted(PLANS)}")
        self.scene = Scene(self.env.task_env(task_id).env)
        self._plan = PLANS[task_id](self.scene)
        self._index, self._steps_in_waypoint, self._settled, self._frozen_target = 0, 0, 0, None
        self._grip, self.regrasps = None, 0

    @property
    def finished(self) -> bool:
        return self._index >= len(self._plan)

    @property
    def waypoint(self) -> str:
        return "done" if self.finished else self._plan[self._index].name

    def act(self) -> ExpertAction:
        if self.scene is None:
            raise RuntimeError("call start(task_id) after the env's reset first")
        self._advance()
        if self.finished:                   # plan exhausted: hold still, gripper open
            label = np.array([0.0] * 6 + [OPEN])
            return ExpertAction(label, label.copy(), "done")
        waypoint = self._plan[self._index]
        label = self._command(waypoint)
        executed = label.copy()
        if self.settings.noise > 0:
            executed[:6] = np.clip(executed[:6] + self._rng.normal(0.0, self.settings.noise, 6), -1.0, 1.0)
        self._steps_in_waypoint += 1
        return ExpertAction(label, executed, waypoint.name)

    def _advance(self) -> None:
        """Move past the waypoints that are reached (and settled) or timed out; go back for a dropped object."""
        while not self.finished:
            waypoint = self._plan[self._index]
            if waypoint.holding is not None and self._dropped(waypoint.holding):
                restart = max((i for i in range(self._index) if self._plan[i].starts_grasp), default=None)
                if restart is not None and self.regrasps < MAX_REGRASPS:
                    self.regrasps += 1
                    self._go_to(restart)
                    continue
            reached = self._reached(waypoint)
            if reached:
                self._settled += 1
            if ((reached and self._settled > waypoint.settle) or self._steps_in_waypoint >= waypoint.timeout
                    or (waypoint.until is not None and waypoint.until(self.scene))):
                self._go_to(self._index + 1)
                continue
            return

    def _go_to(self, index: int) -> None:
        previous = self._plan[self._index]
        self._index = index
        self._steps_in_waypoint, self._settled, self._frozen_target = 0, 0, None
        if not self.finished and self._plan[index].holding is not None and previous.holding is None:
            self._grip = self.scene.eef_pos - self.scene.body_pos(self._plan[index].holding)

    def _dropped(self, body: str) -> bool:
        """Whether the held body has moved away from where the hand took it."""
        grip = self.scene.eef_pos - self.scene.body_pos(body)
        return self._grip is not None and float(np.linalg.norm(grip - self._grip)) > DROP_DISTANCE

    def _target(self, waypoint: Waypoint) -> np.ndarray:
        if not waypoint.frozen:
            return waypoint.target(self.scene)
        if self._frozen_target is None:
            self._frozen_target = waypoint.target(self.scene)
        return self._frozen_target

    def _reached(self, waypoint: Waypoint) -> bool:
        scene = self.scene
        position_error = np.linalg.norm(self._target(waypoint) - scene.eef_pos)
        yaw_error = np.linalg.norm(rotation_vector(hand_rotation(waypoint.yaw, waypoint.tilt) @ scene.eef_rot.T))
        return position_error < waypoint.tolerance and yaw_error < 0.05

    def _command(self, waypoint: Waypoint) -> np.ndarray:
        scene, settings = self.scene, self.settings
        error = self._target(waypoint) - scene.eef_pos
        move = settings.position_gain * error / LIBERO_MAX_DELTA_POS_M
        limit = settings.max_speed * waypoint.speed       # horizontal and vertical capped apart: a long
        move = np.append(soft_cap(move[:2], limit), soft_cap(move[2:], limit))   # reach keeps its height
        rotation_error = rotation_vector(hand_rotation(waypoint.yaw, waypoint.tilt) @ scene.eef_rot.T)
        turn = soft_cap(settings.yaw_gain * rotation_error / LIBERO_MAX_DELTA_ROT_RAD,
                        min(1.0, settings.max_turn * waypoint.turn))
        return np.concatenate([move, turn, [waypoint.gripper]])


# --- plans ------------------------------------------------------------------------------------

CARRY_Z = 1.10                          # grip-site height for carrying over the table
CARRY_Z_HIGH = 1.25                     # ... over the cabinet
BOWL_RIM = np.array([0.0, 0.047, 0.038])  # grip-site offset from the bowl's base centre, on its rim wall
GRIP_SETTLE = 10                        # steps for the fingers to close or open


def at(point: np.ndarray) -> Target:
    point = np.asarray(point, dtype=float).copy()
    return lambda scene: point


def offset(body: str, delta) -> Target:
    delta = np.asarray(delta, dtype=float)
    return lambda scene: scene.body_pos(body) + delta


def over(target: Target, z: float) -> Target:
    return lambda scene: np.append(target(scene)[:2], z)


def above(target: Target, height: float) -> Target:
    return lambda scene: target(scene) + np.array([0.0, 0.0, height])


def carrying(body: str, goal: Target) -> Target:
    """Where the grip site must go for the held `body`'s origin to be at `goal(scene)`."""
    return lambda scene: goal(scene) + (scene.eef_pos - scene.body_pos(body))


def pick(body: str, grasp: np.ndarray, lift_z: float | None, yaw: float = 0.0, approach: float = 0.08) -> list[Waypoint]:
    """Approach from above, close on `body` + `grasp`, lift to `lift_z` (None: stay)."""
    grasp_point = offset(body, grasp)
    lift = [] if lift_z is None else [
        Waypoint("lift", lambda scene: np.append(scene.eef_pos[:2], lift_z), CLOSED, yaw, tolerance=0.02,
                 holding=body)]
    return [
        Waypoint("over the grasp", above(grasp_point, approach), OPEN, yaw, tolerance=0.02, starts_grasp=True),
        Waypoint("down to the grasp", grasp_point, OPEN, yaw, tolerance=0.006, speed=0.6),
        Waypoint("close", grasp_point, CLOSED, yaw, tolerance=0.02, settle=GRIP_SETTLE),
        *lift,
    ]


def place(body: str, goal: Target, carry_z: float, drop: float, yaw: float = 0.0) -> list[Waypoint]:
    """Carry the held `body` over `goal` at `carry_z`, lower its origin to `drop` above the goal, open, retreat."""
    lowered = lambda scene: goal(scene) + np.array([0.0, 0.0, drop])
    return [
        Waypoint("carry over the goal", over(carrying(body, goal), carry_z), CLOSED, yaw, tolerance=0.015,
                 holding=body),
        Waypoint("lower", carrying(body, lowered), CLOSED, yaw, tolerance=0.008, speed=0.6, holding=body),
        Waypoint("release", lambda scene: scene.eef_pos, OPEN, yaw, tolerance=1.0, settle=GRIP_SETTLE // 2),
        Waypoint("retreat", lambda scene: np.append(scene.eef_pos[:2], carry_z), OPEN, yaw, tolerance=0.03),
    ]


def bowl_to(goal: Target, carry_z: float = CARRY_Z, drop: float = 0.02) -> Callable[[Scene], list[Waypoint]]:
    def plan(scene: Scene) -> list[Waypoint]:
        return pick(BOWL, BOWL_RIM, carry_z) + place(BOWL, goal, carry_z, drop)
    return plan


def turn_on_stove(scene: Scene) -> list[Waypoint]:
    knob = lambda s: s.geom_pos(STOVE_KNOB_GEOM) + np.array([0.0, 0.0, 0.02])
    on = lambda s: s.joint_pos(STOVE_KNOB_JOINT) >= STOVE_ON_FROM + 0.1
    twist = [Waypoint(f"twist to {yaw:.1f}", knob, CLOSED, yaw, tolerance=0.02, timeout=30, until=on)
             for yaw in (0.4, 0.8, 1.2)]
    return [
        Waypoint("over the knob", over(knob, 1.0), OPEN, 0.0, tolerance=0.015),
        Waypoint("down to the knob", knob, OPEN, 0.0, tolerance=0.006, speed=0.6),
        Waypoint("close", knob, CLOSED, 0.0, tolerance=0.02, settle=GRIP_SETTLE),
        *twist,
    ]


PLATE_DRAG_Z = 0.913                    # grip-site height that keeps the closed fingers on the plate's floor
PLATE_FLOOR_RADIUS = 0.035
PLATE_YAW = np.pi / 4                   # the hand diagonal: at yaw 0 it reaches the cabinet's handles, at
                                        # a quarter turn the bowl


def drag(goal: Callable[[Scene], np.ndarray], name: str, timeout: int = 80) -> Waypoint:
    """Drag the plate (closed fingers inside it) until its centre is within 1 cm of `goal(scene)` (x, y)."""
    def dragging(s: Scene) -> np.ndarray:
        """The fingers lead the plate's centre by up to its floor's radius: aim that far past the goal
        (bounded, so fingers that slip out of the plate do not chase it)."""
        lead = s.eef_pos[:2] - s.body_pos(PLATE)[:2]
        lead *= min(1.0, PLATE_FLOOR_RADIUS / max(np.linalg.norm(lead), 1e-9))
        return np.append(goal(s) + lead, PLATE_DRAG_Z)
    arrived = lambda s: np.linalg.norm(s.body_pos(PLATE)[:2] - goal(s)) < 0.01
    return Waypoint(name, dragging, CLOSED, PLATE_YAW, tolerance=0.006, timeout=timeout, until=arrived)


def push_plate_to_stove_front(scene: Scene) -> list[Waypoint]:
    """Put the closed fingers inside the plate and drag it into the region in front of the stove: first
    along +y (the bowl is beside it), then along -x. The goal is near the region's corner closest to the
    plate's start and clear of the cream cheese behind it (a plate pushed onto the cheese climbs it)."""
    region = scene.site_pos("main_table_stove_front_region")[:2]
    goal = region + np.array([0.025, 0.027])
    start = scene.body_pos(PLATE)[:2]
    fingers = lambda s: np.append(s.body_pos(PLATE)[:2], PLATE_DRAG_Z)
    return [
        Waypoint("over the plate", above(fingers, 0.06), CLOSED, PLATE_YAW, tolerance=0.015),
        Waypoint("into the plate", fingers, CLOSED, PLATE_YAW, tolerance=0.006, speed=0.6),
        drag(lambda s: np.array([start[0], goal[1]]), "drag along +y"),
        Waypoint("to the plate's centre", fingers, CLOSED, PLATE_YAW, tolerance=0.01),
        drag(lambda s: goal, "drag along -x"),
        Waypoint("retreat", lambda s: np.append(s.eef_pos[:2], CARRY_Z), CLOSED, PLATE_YAW, tolerance=0.03),
    ]


DRAWER_PULL = 0.17                      # how far the handle is pulled (m)
POINT_FORWARD = -np.pi / 2              # tilt that points the hand along -y (at the cabinet's front), fingers
                                        # closing along z


def open_drawer(drawer: str, pull: float = DRAWER_PULL) -> Callable[[Scene], list[Waypoint]]:
    """Turn the hand to point at the cabinet, close it on the drawer's handle bar from the front,
    pull the drawer out along +y by `pull` (or until LIBERO counts it open)."""
    def plan(scene: Scene) -> list[Waypoint]:
        handle = lambda s: s.geom_pos(DRAWER_HANDLE_GEOMS[drawer])
        pulled = handle(scene) + np.array([0.0, pull, 0.0])
        opened = lambda s: s.joint_pos(DRAWER_JOINTS[drawer]) < min(DRAWER_OPEN_BELOW - 0.01, -pull)
        forward = dict(tilt=POINT_FORWARD)
        return [
            Waypoint("turn, above the handle's front", lambda s: handle(s) + np.array([0.0, 0.10, 0.10]), OPEN,
                     tolerance=0.02, timeout=100, **forward),
            Waypoint("in front of the handle", lambda s: handle(s) + np.array([0.0, 0.06, 0.0]), OPEN,
                     tolerance=0.01, **forward),
            Waypoint("onto the handle", handle, OPEN, tolerance=0.006, speed=0.6, **forward),
            Waypoint("close on the handle", handle, CLOSED, tolerance=1.0, settle=GRIP_SETTLE, **forward),
            Waypoint("pull", at(pulled), CLOSED, tolerance=0.01, speed=0.8, until=opened, **forward),
            Waypoint("let go", lambda s: s.eef_pos, OPEN, tolerance=1.0, settle=GRIP_SETTLE // 2, **forward),
            Waypoint("back off", lambda s: s.eef_pos + np.array([0.0, 0.06, 0.0]), OPEN, tolerance=0.02,
                     frozen=True, **forward),
        ]
    return plan


CHEESE_GRASP = np.array([0.0, 0.0, 0.002])  # across the cream cheese's width (4.2 cm along y), at mid-height


def cream_cheese_in_bowl(scene: Scene) -> list[Waypoint]:
    """Pick the cream cheese across its width, hold it centred 4 cm over the bowl's base, let it drop in."""
    return (pick(CREAM_CHEESE, CHEESE_GRASP, CARRY_Z)
            + place(CREAM_CHEESE, lambda s: s.body_pos(BOWL) + np.array([0.0, 0.0, 0.04]), CARRY_Z, drop=0.0))


BOTTLE_GRASP = np.array([0.0, 0.0, 0.125])  # across the wine bottle's neck, 3 cm under its top: the fingers
                                        # reach 3 cm below the palm and the bottle is 16 cm tall
QUARTER_TURN = np.pi / 2                # the hand's wide side along x: clear of the rack behind the bottle
BOTTLE_CARRY_Z = 1.29                   # the bottle's base 3.8 cm over the cabinet's top


def wine_bottle_to(goal: Target, carry_z: float) -> Callable[[Scene], list[Waypoint]]:
    def plan(scene: Scene) -> list[Waypoint]:
        return (pick(WINE_BOTTLE, BOTTLE_GRASP, carry_z, yaw=QUARTER_TURN)
                + place(WINE_BOTTLE, goal, carry_z, drop=0.01, yaw=QUARTER_TURN))
    return plan


RACK_SLOT = "wine_rack_1_top_region"   # at the lower edge of the rack's top board, which rises ~30 degrees toward -y
RACK_ASIDE = np.array([0.06, 0.0, 0.0])  # the rack's post sticks out of the board's middle: lay the bottle beside it


def wine_bottle_on_rack(scene: Scene) -> list[Waypoint]:
    """Hold the bottle by its neck, tilt it to lie along the rack's top board (neck up the slope), lower
    it onto the board just above the slot's lower edge, let go."""
    slot = scene.sim.data.get_site_xmat(RACK_SLOT).reshape(3, 3)
    up_slope, off_board = slot[:, 2].copy(), -slot[:, 1].copy()     # along the board; its upward normal
    tilt = float(np.arctan2(-up_slope[1], up_slope[2]))             # about x: the bottle's axis from up to up_slope
    goal = lambda s: s.site_pos(RACK_SLOT) + RACK_ASIDE + 0.06 * up_slope + 0.03 * off_board
    above_board = lambda s: goal(s) + 0.08 * off_board
    hold = dict(yaw=QUARTER_TURN, tilt=tilt)
    return pick(WINE_BOTTLE, BOTTLE_GRASP, BOTTLE_CARRY_Z, yaw=QUARTER_TURN) + [
        Waypoint("tilt", lambda s: s.eef_pos, CLOSED, tolerance=0.03, frozen=True, timeout=40, **hold),
        Waypoint("over the board", carrying(WINE_BOTTLE, above_board), CLOSED, tolerance=0.015, timeout=100, **hold),
        Waypoint("onto the board", carrying(WINE_BOTTLE, goal), CLOSED, tolerance=0.008, speed=0.5, **hold),
        Waypoint("release", lambda s: s.eef_pos, OPEN, tolerance=1.0, settle=GRIP_SETTLE // 2, **hold),
        Waypoint("back off", lambda s: s.eef_pos + 0.08 * off_board, OPEN, tolerance=0.02, frozen=True, **hold),
    ]


TOP_DRAWER_PULL = 0.13                  # the open part (past the cabinet's top board) fits the bowl; pulled
                                        # further, the drawer hangs over the bowl on the table
BOWL_YAW_FOR_DRAWER = np.pi / 2         # grip the bowl's -x rim: the hand's wide side along x, clear of the
                                        # drawer's front and of the cabinet's top board


def turned(offset, yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.asarray(offset, dtype=float)


def bowl_in_top_drawer(scene: Scene) -> list[Waypoint]:
    """Open the top drawer 13 cm, put the bowl in: 2 cm to the drawer's +x side (the fingers hold its -x
    rim) and between the drawer's front and the edge of the cabinet's top board."""
    inside = lambda s: s.site_pos("wooden_cabinet_1_top_region") + np.array([0.02, 0.0185, -0.02])
    yaw = BOWL_YAW_FOR_DRAWER
    return (open_drawer("top", pull=TOP_DRAWER_PULL)(scene)
            + pick(BOWL, turned(BOWL_RIM, yaw), CARRY_Z_HIGH, yaw=yaw, approach=0.15)
            + place(BOWL, inside, CARRY_Z_HIGH, drop=0.01, yaw=yaw))


PLANS: dict[int, Callable[[Scene], list[Waypoint]]] = {
    0: open_drawer("middle"),
    1: bowl_to(lambda s: s.site_pos("flat_stove_1_cook_region") + np.array([0.0, 0.0, 0.025])),
    2: wine_bottle_to(lambda s: s.site_pos("wooden_cabinet_1_top_side") + np.array([-0.03, 0.05, 0.0]),
                      carry_z=BOTTLE_CARRY_Z),
    3: bowl_in_top_drawer,
    4: bowl_to(lambda s: s.site_pos("wooden_cabinet_1_top_side"), carry_z=CARRY_Z_HIGH),
    5: push_plate_to_stove_front,
    6: cream_cheese_in_bowl,
    7: turn_on_stove,
    8: bowl_to(lambda s: s.body_pos(PLATE) + np.array([0.0, 0.0, 0.01])),
    9: wine_bottle_on_rack,
}
assert all(0 <= task_id < len(LIBERO_GOAL_INSTRUCTIONS) for task_id in PLANS)


# --- episodes ---------------------------------------------------------------------------------

SETTLE_STEPS = 20                       # hold-still steps after the plan ends, for what was let go to settle


@dataclass
class ExpertEpisode:
    """One expert episode: the env's result record and, per step, the MuJoCo state the action was taken
    in, the expert's action (the label, OpenVLA's convention), the action executed (with noise, if any)
    and the robot's proprioception before the step."""
    record: dict
    states: np.ndarray                  # (T, state_dim) flattened MuJoCo states (LIBERO's `states`)
    actions: np.ndarray                 # (T, 7) labels
    executed: np.ndarray                # (T, 7)
    robot: list                         # T RobotState
    waypoints: list[str] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return bool(self.record["success"])


def run_expert_episode(env, task_id: int, episode: int, settings: ExpertSettings = ExpertSettings(),
                       settle_steps: int = SETTLE_STEPS) -> ExpertEpisode:
    """Reset `env` (a LiberoGoalEnv) to `episode` of `task_id` and let the expert act until the env is done
    (success or its step limit) or the plan has run out and `settle_steps` more have passed."""
    observation = env.reset(task_id, episode)
    expert = ScriptedExpert(env, settings)
    expert.start(task_id)
    states, labels, executed, robot, waypoints = [], [], [], [], []
    after_plan = 0
    while not env.done and after_plan <= settle_steps:
        action = expert.act()
        states.append(env.task_env(task_id).sim.get_state().flatten())
        labels.append(action.label)
        executed.append(action.executed)
        robot.append(observation.robot)
        waypoints.append(action.waypoint)
        observation = env.step(action.executed)
        after_plan += expert.finished
    plan_ended = not env.done
    if plan_ended:                      # the episode ends here, a failure (the env records its times)
        env.interrupt("the expert's plan ended without success")
    record = env.result.as_dict()
    if plan_ended:
        record.update(interrupted=False,
                      failure_reason=f"the expert's plan ended after {record['steps']} steps without success")
    record["regrasps"] = expert.regrasps
    return ExpertEpisode(record, np.array(states), np.array(labels), np.array(executed), robot, waypoints)
