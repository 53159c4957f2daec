"""LIBERO-GOAL settings of OpenVLA's LIBERO evaluation harness (`experiments/robot/libero/`),
owned by the environment wrapper; plain values, importable without the simulator or the model.
See shared/DESIGN.md.
"""
# --- Evaluation conventions ------------------------------------------------------------
LIBERO_RENDER_SIZE = 256
LIBERO_GOAL_MAX_STEPS = 300
LIBERO_NUM_STEPS_WAIT = 10
LIBERO_WAIT_ACTION = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0)
LIBERO_MAX_DELTA_POS_M = 0.05       # OSC_POSE output limits per control step
LIBERO_MAX_DELTA_ROT_RAD = 0.5
LIBERO_CONTROL_HZ = 20
LIBERO_GOAL_SUITE = "libero_goal"   # key in libero's benchmark dict
LIBERO_GOAL_NUM_TASKS = 10
LIBERO_EPISODES_PER_TASK = 50       # fixed initial states per task; a full evaluation runs them all
LIBERO_GOAL_INSTRUCTIONS = (        # the suite's task language, in task-id order
    "open the middle drawer of the cabinet", "put the bowl on the stove", "put the wine bottle on top of the cabinet",
    "open the top drawer and put the bowl inside", "put the bowl on top of the cabinet",
    "push the plate to the front of the stove", "put the cream cheese in the bowl", "turn on the stove",
    "put the bowl on the plate", "put the wine bottle on the rack")
