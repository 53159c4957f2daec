"""Mamba sequence core for the EAGLE-style draft head (mamba_simple.py, without the cache plumbing).

`MambaMixer` has mamba_ssm's parameter names and shapes (in_proj, conv1d, x_proj, dt_proj,
A_log, D, out_proj), so one state dict serves both paths:

- pure PyTorch (CPU, or CUDA without mamba_ssm): a full-sequence scan that may continue from
  any state, and a single-token `step_rows` (what `forward` runs for one position after a state);
  both can stop at the state when nobody reads the outputs (`MambaCore.absorb`);
- mamba_ssm kernels (CUDA with the package): `selective_scan_fn` for a sequence started from
  zeros, `selective_state_update` for a step.

States are immutable `(conv_state, ssm_state)` pairs: every call returns new tensors, so a
snapshot for rollback is just a reference to an earlier state, and restoring it is exact. A draft
tree keeps one state per branch, batched: the rows of a state are branches, and the next level
selects its parents' rows (`MambaCore.step_branches`).
conv_state [B, d_inner, d_conv] holds the last d_conv pre-convolution inputs; ssm_state
[B, d_inner, d_state] is the recurrence, kept in fp32 (bf16 drifts, fp16 overflows).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

try:  # the CUDA kernels; absent on CPU-only machines
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update
    KERNELS_IMPORT_ERROR = None
except ImportError as error:
    selective_scan_fn = selective_state_update = None
    KERNELS_IMPORT_ERROR = str(error)

MAMBA_D_STATE = 16                  # mamba_simple's defaults
MAMBA_D_CONV = 4
MAMBA_EXPAND = 2
MambaState = tuple  # (conv_state, ssm_state)


def kernels_unusable_reason(device: torch.device) -> str | None:
    """Why the Mamba core runs its PyTorch path rather than mamba_ssm's kernels on `device` (None:
    it runs the kernels)."""
    if selective_scan_fn is None:
        return (f"mamba_ssm does not import ({KERNELS_IMPORT_ERROR}); it is the CUDA extra: "
                "pip install -e '.[cuda]' on a machine with CUDA")
    if torch.device(device).type != "cuda":
        return f"mamba_ssm's kernels run on CUDA only, not on {torch.device(device).type}"
    return None


def kernels_usable(device: torch.device) -> bool:
    return kernels_unusable_reason(device) is None


@dataclass(frozen=True)
class MambaConfig:
    d_model: int
    num_layers: int = 1
    d_state: int = MAMBA_D_STATE
    d_conv: int = MAMBA_D_CONV
    expand: int = MAMBA_EXPAND

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def dt_rank(self) -> int:
        return math.ceil(self.d_model / 16)

    def to_dict(self) -> dict:
        return asdict(self)


def selective_scan(x, dt, A, B, C, state, outputs: bool = True):
    """Reference scan, fp32. x, dt: [b, l, d]; A: [d, n]; B, C: [b, l, n]; state: [b, d, n].

    h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t and y_t = C_t h_t; returns y [b, l, d] (None without
    `outputs`) and h_l.
    """
    decay = torch.exp(dt.unsqueeze(-1) * A)                                  # [b, l, d, n]
    drive = (dt * x).unsqueeze(-1) * B.unsqueeze(2)                          # [b, l, d, n]
    states = []
    for drive_t, decay_t in zip(drive.unbind(1), decay.unbind(1)):   # unbind: one gradient buffer, not one per step
        state = torch.addcmul(drive_t, decay_t, state)
        states.append(state)
    if not outputs:
        return None, state
    y = (torch.stack(states, dim=1) @ C.unsqueeze(-1)).squeeze(-1)                 # sum over n of h_t * C_t
    return y, state


class MambaMixer(nn.Module):
    fp32_parameters = ("A_log", "D")       # kept in fp32 under bf16 weights, as mamba_ssm does

    def __init__(self, config: MambaConfig):
        super().__init__()
        self.config = config
        d_inner, d_state, dt_rank = config.d_inner, config.d_state, config.dt_rank
        self.in_proj = nn.Linear(config.d_model, 2 * d_inner, bias=False)
        self.conv1d = nn.Conv1d(d_inner, d_inner, config.d_conv, groups=d_inner, padding=config.d_conv - 1)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, config.d_model, bias=False)
        # mamba_simple's dt initialisation: softplus(dt_proj.bias) log-uniform in [1e-3, 1e-1]
        nn.init.uniform_(self.dt_proj.weight, -dt_rank ** -0.5, dt_rank ** -0.5)
        dt = torch.exp(torch.rand(d_inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def empty_state(self, batch: int, device, dtype) -> MambaState:
        config = self.config
        return (torch.zeros(batch, config.d_inner, config.d_conv, device=device, dtype=dtype),
                torch.zeros(batch, config.d_inner, config.d_state, device=device, dtype=torch.float32))

    def _in_proj(self, hidden: torch.Tensor, gate: bool):
        """[..., d_model] -> x, z [..., d_inner]; z (the output gate) is None without `gate`: a
        state-only pass reads half of in_proj, the draft's largest weight."""
        if gate:
            return F.linear(hidden, self.in_proj.weight).chunk(2, dim=-1)
        return F.linear(hidden, self.in_proj.weight[:self.config.d_inner]), None

    def _ssm_inputs(self, x: torch.Tensor):
        """x (after conv) [..., d_inner] -> dt (before softplus, without bias), B, C."""
        config = self.config
        dt, B, C = torch.split(F.linear(x, self.x_proj.weight), [config.dt_rank, config.d_state, config.d_state], dim=-1)
        return F.linear(dt, self.dt_proj.weight), B, C

    def forward(self, hidden: torch.Tensor, state: MambaState | None = None,
                outputs: bool = True) -> tuple[torch.Tensor | None, MambaState]:
        """[b, l, d_model] continuing from `state` (None: from zeros) -> output and the new state.
        Without `outputs` the pure-PyTorch path computes only the state and returns None for the output."""
        batch, length, _ = hidden.shape
        if state is not None and length == 1:
            out, state = self.step_rows(hidden[:, 0], state, outputs)
            return (out.unsqueeze(1) if outputs else None), state
        fresh = state is None
        conv_state, ssm_state = self.empty_state(batch, hidden.device, hidden.dtype) if fresh else state
        use_kernel = fresh and kernels_usable(hidden.device)
        x, z = self._in_proj(hidden, outputs or use_kernel)
        window = torch.cat([conv_state[..., 1:], x.transpose(1, 2)], dim=-1)    # d_conv - 1 earlier inputs
        new_conv_state = window[..., -self.config.d_conv:]
        x = F.silu(F.conv1d(window, self.conv1d.weight, self.conv1d.bias, groups=self.config.d_inner))
        x = x.transpose(1, 2)                                                    # [b, l, d_inner]
        dt, B, C = self._ssm_inputs(x)
        A = -torch.exp(self.A_log.float())
        if use_kernel:
            y, new_ssm_state = selective_scan_fn(
                x.transpose(1, 2).contiguous(), dt.transpose(1, 2).contiguous(), A,
                B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(), self.D.float(),
                z=z.transpose(1, 2).contiguous(), delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
                return_last_state=True)
            y = y.transpose(1, 2)
        else:
            dt = F.softplus(dt.float() + self.dt_proj.bias.float())
            y, new_ssm_state = selective_scan(x.float(), dt, A, B.float(), C.float(), ssm_state, outputs)
            if not outputs:
                return None, (new_conv_state, new_ssm_state)
            y = ((y + self.D.float() * x.float()) * F.silu(z.float())).to(hidden.dtype)
        return self.out_proj(y), (new_conv_state, new_ssm_state)

    def step_rows(self, hidden: torch.Tensor, state: MambaState,
                  outputs: bool = True) -> tuple[torch.Tensor | None, MambaState]:
        """One position per row, [b, d_model] -> [b, d_model] and the new state: `step` without the
        length axis and module calls (a draft's proposal step on the CPU spends much of its time in
        dispatch, not arithmetic). Without `outputs` the pure-PyTorch path stops at the state."""
        conv_state, ssm_state = state
        use_kernel = kernels_usable(hidden.device) and not torch.compiler.is_compiling()   # compiled: inductor's
        x, z = self._in_proj(hidden, outputs or use_kernel)                     # [b, d_inner] each
        conv_state = torch.cat([conv_state[..., 1:], x.unsqueeze(-1)], dim=-1)
        x = F.silu((conv_state * self.conv1d.weight[:, 0]).sum(-1) + self.conv1d.bias)
        dt, B, C = self._ssm_inputs(x)
        A = -torch.exp(self.A_log.float())
        if use_kernel:
            ssm_state = ssm_state.clone()                                        # the kernel updates in place
            y = selective_state_update(ssm_state, x, dt, A, B, C, self.D, z=z, dt_bias=self.dt_proj.bias,
                                       dt_softplus=True)
        else:
            x, B, C = x.float(), B.float(), C.float()
            dt = F.softplus(dt.float() + self.dt_proj.bias.float())
            drive = (dt * x).unsqueeze(-1) * B.unsqueeze(1)                      # [b, d_inner, d_state]
            ssm_state = torch.addcmul(drive, torch.exp(dt.unsqueeze(-1) * A), ssm_state)
            if not outputs:
                return None, (conv_state, ssm_state)
            y = torch.addcmul((ssm_state @ C.unsqueeze(-1)).squeeze(-1), self.D.float(), x)   # [b, d_inner]
            y = (y * F.silu(z.float())).to(hidden.dtype)
        return F.linear(y, self.out_proj.weight), (conv_state, ssm_state)


class MambaBlock(nn.Module):
    """Pre-norm residual block, as in mamba_ssm's `Block`."""

    def __init__(self, config: MambaConfig, eps: float):
        super().__init__()
        self.norm = nn.RMSNorm(config.d_model, eps=eps)
        self.mixer = MambaMixer(config)

    def forward(self, hidden, state=None, outputs: bool = True):
        out, state = self.mixer(self.norm(hidden), state, outputs)
        return (hidden + out if outputs else None), state

    def step_rows(self, hidden, state, outputs: bool = True):
        """[b, d_model] one position per row (MambaMixer.step_rows)."""
        normed = F.rms_norm(hidden, self.norm.weight.shape, self.norm.weight, self.norm.eps)
        out, state = self.mixer.step_rows(normed, state, outputs)
        return (hidden + out if outputs else None), state


class MambaCore(nn.Module):
    """The head's sequence core: Mamba blocks; the state is a tuple of per-block MambaStates."""

    kind = "mamba"

    def __init__(self, config: MambaConfig, eps: float = 1e-6):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(MambaBlock(config, eps) for _ in range(config.num_layers))

    def forward(self, hidden: torch.Tensor, state=None):
        states = []
        for index, layer in enumerate(self.layers):
            hidden, layer_state = layer(hidden, None if state is None else state[index])
            states.append(layer_state)
        return hidden, tuple(states)

    def step_rows(self, hidden: torch.Tensor, state):
        """One position per row, [b, d_model], from a state (never None): `forward` for one token."""
        states = []
        for layer, layer_state in zip(self.layers, state):
            hidden, layer_state = layer.step_rows(hidden, layer_state)
            states.append(layer_state)
        return hidden, tuple(states)

    def absorb(self, hidden: torch.Tensor, state=None):
        """[l, d_model] positions after `state` (None: from zeros) whose outputs nobody reads -> the
        new state: one scan over them (a step for one position); the last block stops at its state."""
        states = []
        for index, layer in enumerate(self.layers):
            outputs = index < len(self.layers) - 1
            out, layer_state = layer(hidden[None], None if state is None else state[index], outputs)
            hidden = out[0] if outputs else None
            states.append(layer_state)
        return tuple(states)

    @staticmethod
    def begin_branches(state):
        """A draft tree's branches from one state (batch 1): the state itself."""
        return state

    def step_branches(self, hidden: torch.Tensor, branches, rows: list[int]):
        """One level of a draft tree: row i of `hidden` [n, d_model] continues branch `rows[i]` of
        `branches` (one state per branch, batched) -> outputs [n, d_model] and the n new branches.
        New tensors: the parents' states stay as they were."""
        index = torch.tensor(rows, device=hidden.device)
        parents = tuple((conv.index_select(0, index), ssm.index_select(0, index)) for conv, ssm in branches)
        return self.step_rows(hidden, parents)

    @staticmethod
    def snapshot(state):
        return state            # immutable: keeping the reference is the snapshot

    @staticmethod
    def restore(state, snapshot):
        return snapshot
